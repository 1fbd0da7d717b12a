"""Bench-only baseline for ``bench_alert_latency.py``: a retrain started by a polling sensor.

This is how an alert would start a retrain without asset events: the DAG's first task is a sensor that looks
for an alert file in a folder every 60 s (``mode="reschedule"``, so it frees its worker slot between pokes), and
``retrain_start`` stands in for the first task of the retrain. The bench triggers each run by hand with
``conf={"inbox": <folder>}``, drops an alert file into that folder at a random moment, and times the drop to the
start of ``retrain_start``.

Only the benchmark's own stack parses this file (its dags folder is a temporary one); it is not a project DAG.
Nothing heavy is imported at parse time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

log = logging.getLogger(__name__)

POKE_SECONDS = 60  # the baseline's polling interval (the "polling sensor with a 60 s interval")


@dag(
    dag_id="poll_baseline",
    description="Bench baseline: a sensor polls a folder for an alert file every 60 s, then the retrain starts",
    schedule=None,  # the bench triggers every run
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["bench"],
    params={"inbox": "/nonexistent"},
)
def poll_baseline() -> None:
    @task.sensor(poke_interval=POKE_SECONDS, mode="reschedule", timeout=timedelta(minutes=10))
    def wait_for_alert() -> bool:
        """One poke: is there an alert file in the run's inbox folder?"""
        inbox = Path(get_current_context()["params"]["inbox"])
        found = sorted(inbox.glob("*.json")) if inbox.is_dir() else []
        log.info("poked %s: %s", inbox, ", ".join(p.name for p in found) or "no alert yet")
        return bool(found)

    @task(retries=0)
    def retrain_start() -> None:
        """Stands in for the first task of a retrain: its start time is what the bench measures."""
        log.info("retrain started")

    wait_for_alert() >> retrain_start()


poll_baseline()
