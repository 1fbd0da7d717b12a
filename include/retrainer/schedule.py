"""The ticks of a project's cron schedule between its start and end dates (what the scheduler runs)."""

from __future__ import annotations

from datetime import datetime


def cron_ticks(cron: str, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Every tick of ``cron`` from ``start`` (included when it matches) to ``end`` (included).

    Raises:
        ValueError: More than ``limit`` ticks.
    """
    from croniter import croniter

    ticks = [start] if croniter.match(cron, start) else []
    it = croniter(cron, start)
    while (tick := it.get_next(datetime)) <= end:
        ticks.append(tick)
        if len(ticks) > limit:
            raise ValueError(f"more than {limit} ticks of {cron!r} between {start} and {end}")
    return [tick for tick in ticks if tick <= end]
