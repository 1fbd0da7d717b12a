"""Replay past weeks of a project through the real Airflow scheduler, then show a drift-triggered retrain.

This is what ``make run`` does.

The project's schedule has ``catchup: true`` and a bounded ``start_date``/``end_date``; unpausing its DAG lets
the scheduler create one run per weekly tick, one after the other (``max_active_runs=1``). This module only
unpauses and watches, through the Airflow REST API.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
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
    from retrainer.schedule import cron_ticks

    schedule = config.schedule
    if not schedule.catchup:
        raise ValueError(f"project {config.name}: schedule.catchup is false, the scheduler replays nothing")
    end = min(schedule.end_date or datetime.max.replace(tzinfo=UTC), now or datetime.now(UTC))
    try:
        return cron_ticks(schedule.cron, schedule.start_date, end, limit=520)
    except ValueError:
        message = f"project {config.name}: more than 520 weekly ticks to replay; set schedule.end_date"
        raise ValueError(message) from None


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
    client.wait_until_dag_parsed(dag_id, timeout=timeout)
    client.unpause(dag_id)
    return client.wait_for_dag_runs(dag_id, expected, timeout, run_type="scheduled", on_finished=on_run)


def _next_run(
    client: AirflowClient, dag_id: str, seen: int, timeout: float, run_type: str | None = None
) -> dict[str, Any]:
    """Wait for run number ``seen + 1`` of a DAG to be created, then for it to finish."""
    import time

    from retrainer.airflow_api import AirflowWaitTimeout

    deadline = time.monotonic() + timeout
    while len(runs := client.list_dag_runs(dag_id, run_type=run_type)) <= seen:
        if time.monotonic() > deadline:
            raise AirflowWaitTimeout(f"no new run of {dag_id!r} within {timeout:.0f} s")
        time.sleep(client.poll_interval)
    return client.wait_for_dag_run(dag_id, runs[-1]["dag_run_id"], timeout=timeout)


def drift_demo(
    client: AirflowClient,
    config: ProjectConfig,
    week: date,
    timeout: float = 900,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Turn the drift monitor on, land a week, and follow what happens by itself: monitor, alert, retrain.

    Nothing here starts a run: the landing watcher starts the monitor, whose alert starts the retrain.

    Args:
        client: A logged-in Airflow API client.
        config: The project.
        week: Monday of the demo week to land (a summer week drifts far from a winter champion).
        timeout: Seconds to wait for each run.
        on_step: Called with one line per step (for progress output).

    Returns:
        ``monitor`` and ``retrain`` runs (``retrain`` None when no alert was raised), ``drift`` and ``alerts``;
        ``skipped`` with the reason when the week had landed before.
    """
    from retrainer import demo
    from retrainer.catalog import Catalog

    say = on_step or (lambda line: None)
    batch_id = week.isoformat()
    if any(record.batch_id == batch_id for record in Catalog(config).all()):
        reason = f"week {batch_id} landed in an earlier run; its monitor run and retrain are in the Airflow UI"
        say(reason)
        return {"skipped": reason}
    monitor, retrain = f"monitor_{config.name}", dag_id_of(config)
    client.wait_until_dag_parsed(monitor, timeout=timeout)
    monitor_seen = len(client.list_dag_runs(monitor))
    alerts_seen = len(client.list_dag_runs(retrain, run_type="asset_triggered"))
    client.unpause(monitor)
    say(f"{monitor} unpaused: it runs when a batch or late labels land")
    demo.land_weeks(config, week, 1)
    say(f"landed week {batch_id}; waiting for the landing watcher to start {monitor}")
    run = _next_run(client, monitor, monitor_seen, timeout)
    drift = client.xcom(monitor, run["dag_run_id"], "drift") or {}
    raised = (client.xcom(monitor, run["dag_run_id"], "raise_alert") or {}).get("alerts", [])
    say(f"{monitor} {run['state']}: {drift.get('summary', 'no drift summary')}")
    result: dict[str, Any] = {"monitor": run, "drift": drift, "alerts": raised, "retrain": None}
    if not raised:
        say("no alert raised: nothing to retrain")
        return result
    say(f"alert raised ({raised[0]['kind']}); waiting for the retrain it starts")
    result["retrain"] = _next_run(client, retrain, alerts_seen, timeout, run_type="asset_triggered")
    decision = client.xcom(retrain, result["retrain"]["dag_run_id"], "promote") or {}
    say(
        f"{retrain} run {result['retrain']['dag_run_id']} {result['retrain']['state']}: "
        f"{decision.get('reason', 'no decision (see the run)')}"
    )
    return result
