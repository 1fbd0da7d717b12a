"""Replay past weeks of a project through the real Airflow scheduler (what ``make run`` does).

The project's schedule has ``catchup: true`` and a bounded ``start_date``/``end_date``; unpausing its DAG lets
the scheduler create one run per weekly tick, one after the other (``max_active_runs=1``). This module only
unpauses and watches, through the Airflow REST API.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrainer.airflow_api import AirflowClient
    from retrainer.config import ProjectConfig


def dag_id_of(config: ProjectConfig) -> str:
    """The weekly DAG's id for a project (see ``dags/retrain_weekly.py``)."""
    return f"retrain_{config.name}"


def scheduled_ticks(config: ProjectConfig, now: datetime | None = None) -> list[datetime]:
    """The cron ticks the scheduler will run for a catch-up schedule, up to ``end_date`` or now.

    Raises:
        ValueError: The schedule does not catch up or has no end, so a replay would never finish.
    """
    from croniter import croniter

    schedule = config.schedule
    if not schedule.catchup:
        raise ValueError(f"project {config.name}: schedule.catchup is false, the scheduler replays nothing")
    end = min(schedule.end_date or datetime.max.replace(tzinfo=UTC), now or datetime.now(UTC))
    ticks = []
    it = croniter(schedule.cron, schedule.start_date)
    if croniter.match(schedule.cron, schedule.start_date):
        ticks.append(schedule.start_date)
    while True:
        tick = it.get_next(datetime)
        if tick > end:
            break
        ticks.append(tick)
        if len(ticks) > 520:
            raise ValueError(f"project {config.name}: more than 520 weekly ticks to replay; set schedule.end_date")
    return ticks


def replay(
    client: AirflowClient,
    config: ProjectConfig,
    timeout: float = 3600,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Unpause the project's DAG and wait until the scheduler has finished every catch-up run.

    Args:
        client: A logged-in Airflow API client.
        config: The project.
        timeout: Seconds to wait for all runs.
        on_run: Called once with each run as it finishes (for progress output).

    Returns:
        The finished scheduled runs, oldest first.

    Raises:
        AirflowApiError: Not all runs finished in time; the message lists their states.
    """
    dag_id = dag_id_of(config)
    expected = len(scheduled_ticks(config))
    client.wait_until_dag_parsed(dag_id, timeout=180)
    client.unpause(dag_id)
    return client.wait_for_dag_runs(dag_id, expected, timeout, run_type="scheduled", on_finished=on_run)
