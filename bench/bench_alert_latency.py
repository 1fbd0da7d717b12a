"""How fast does a drift alert start a retrain? Asset events against a polling sensor.

Latency here is the time from the moment an alert is posted (REST API) or dropped (inbox file) to the moment the
first task of the retrain it starts begins to run (the task instance's ``start_date`` in Airflow), on the
embedded default stack (scheduler + LocalExecutor + triggerer), with the stack's own settings.

- event-driven: the repo's ``retrain_<project>`` DAG, scheduled on the project's drift-alert asset. An alert is
  posted through the Airflow REST API (``POST /api/v2/assets/events``) or dropped into the project's inbox,
  which the triggerer's ``AlertInboxTrigger`` watches. The first task is ``gate``.
- baseline: ``bench/dags/poll_baseline.py``, whose first task is a sensor that polls a folder for an alert file
  every 60 s (reschedule mode); the first retrain task is ``retrain_start``. Each run is triggered by hand and
  its alert file dropped a random 0-60 s after the sensor's first empty poke, so that alerts arrive uniformly
  phased against the poll.

Every alert's run is waited for before the next alert: runs of one project never overlap (``max_active_runs=1``),
so back-to-back alerts would measure queueing. A first alert, not counted, runs the full retrain; the project's
alert cooldown then suppresses the retrain of every measured alert in its ``gate`` task, which keeps each run
short and does not change when ``gate`` starts. Usage:

    .venv/bin/python bench/bench_alert_latency.py --alerts 10 --via both
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from _scratch import REPO, scratch_environment  # bench/ is on sys.path when a bench runs as a script

PROJECT = "bench_alerts"
DAG_ID = f"retrain_{PROJECT}"
BASELINE_DAG_ID = "poll_baseline"
POLL_SECONDS = 60  # must match POKE_SECONDS in bench/dags/poll_baseline.py
TARGET_SECONDS = 10.0
PATH_LABELS = {
    "rest": "alert via REST API",
    "inbox": "alert via inbox file",
    "baseline": f"polling sensor, {POLL_SECONDS} s",
}


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _task_start(client, dag_id: str, run_id: str, task_id: str) -> datetime:
    """When a task instance of a finished run started."""
    for ti in client.task_instances(dag_id, run_id):
        if ti["task_id"] == task_id and ti.get("start_date"):
            return _parse(ti["start_date"])
    raise RuntimeError(f"{task_id} of {dag_id} run {run_id} never started")


def _prepare_project(root: Path) -> Path:
    """A manual-only copy of the demo project with two weeks landed and a long alert cooldown."""
    from integration.conftest import write_manual_project

    from retrainer import demo
    from retrainer.config import load_config

    path = write_manual_project(root, PROJECT, f"{PROJECT}_arr_delay")
    raw = yaml.safe_load(path.read_text())
    # A day: after the warm-up alert's retrain, every measured alert is suppressed by `gate` (short runs).
    raw["alerts"] = {"cooldown_minutes": 24 * 60}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    demo.land_weeks(load_config(path), demo.DEMO_START, 2)
    return path


def _dags_folder(root: Path) -> Path:
    """A dags folder with the repo's retrain DAG and the bench-only baseline DAG, nothing else."""
    folder = root / "dags"
    folder.mkdir()
    (folder / "retrain_weekly.py").symlink_to(REPO / "dags" / "retrain_weekly.py")
    (folder / "poll_baseline.py").symlink_to(REPO / "bench" / "dags" / "poll_baseline.py")
    return folder


def _new_alert_run(client, seen: set[str], timeout: float = 180) -> str:
    """The id of the first asset-triggered run of the retrain DAG that is not in ``seen``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [
            r for r in client.list_dag_runs(DAG_ID, run_type="asset_triggered") if r["dag_run_id"] not in seen
        ]
        if fresh:
            return fresh[0]["dag_run_id"]
        time.sleep(1)
    raise RuntimeError(f"no alert-triggered run of {DAG_ID} within {timeout:.0f} s")


def _alert_once(client, via: str, number: int, inbox: Path) -> dict[str, Any]:
    """Raise one alert, wait for the run it starts to finish, and time alert -> ``gate`` start."""
    from retrainer import alerts

    seen = {r["dag_run_id"] for r in client.list_dag_runs(DAG_ID, run_type="asset_triggered")}
    reason = f"bench alert {number}"
    # Taken before the call, so the REST figure includes the client's asset-id lookup and the POST itself.
    posted = datetime.now(UTC)
    if via == "rest":
        client.create_asset_event(
            alerts.asset_uri(PROJECT), {"kind": "external", "source": "bench", "reason": reason}
        )
    else:
        alerts.drop_in_inbox(inbox, alerts.DriftAlert(source="bench", reason=reason))
    run_id = _new_alert_run(client, seen)
    run = client.wait_for_dag_run(DAG_ID, run_id, timeout=900)
    gate = {ti["task_id"]: ti for ti in client.task_instances(DAG_ID, run_id)}["gate"]
    return {
        "via": via,
        "run_id": run_id,
        "state": run["state"],
        "gate": gate["state"],
        "latency_s": (_task_start(client, DAG_ID, run_id, "gate") - posted).total_seconds(),
        "run_queued_s": (_parse(run["queued_at"]) - posted).total_seconds() if run.get("queued_at") else None,
    }


def _sensor_state(client, run_id: str) -> str | None:
    for ti in client.task_instances(BASELINE_DAG_ID, run_id):
        if ti["task_id"] == "wait_for_alert":
            return ti.get("state")
    return None


def _baseline_once(client, folder: Path, delay: float) -> dict[str, Any]:
    """Trigger a polling run, drop its alert ``delay`` s after the first empty poke, time drop -> retrain."""
    folder.mkdir(parents=True)
    run_id = client.trigger(BASELINE_DAG_ID, conf={"inbox": str(folder)})
    deadline = time.monotonic() + 180
    while _sensor_state(client, run_id) != "up_for_reschedule":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sensor of {BASELINE_DAG_ID} run {run_id} never poked")
        time.sleep(1)
    time.sleep(delay)
    dropped = datetime.now(UTC)
    # Written under another name and renamed, as the real inbox asks: the sensor never sees half a file.
    partial = folder / "alert.tmp"
    partial.write_text(json.dumps({"kind": "external", "source": "bench", "reason": "baseline alert"}))
    os.replace(partial, folder / "alert.json")
    run = client.wait_for_dag_run(BASELINE_DAG_ID, run_id, timeout=300)
    if run["state"] != "success":
        raise RuntimeError(f"baseline run {run_id} ended {run['state']}")
    started = _task_start(client, BASELINE_DAG_ID, run_id, "retrain_start")
    return {
        "via": "baseline",
        "run_id": run_id,
        "delay_s": delay,
        "latency_s": (started - dropped).total_seconds(),
    }


def _summary(samples: list[dict[str, Any]]) -> dict[str, float]:
    latencies = [s["latency_s"] for s in samples]
    return {"n": len(latencies), "median": statistics.median(latencies), "max": max(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=10, help="Measured alerts per event-driven path.")
    parser.add_argument(
        "--via", choices=["rest", "inbox", "both"], default="both", help="both: N of each, alternating."
    )
    parser.add_argument("--baseline", type=int, help="Polling-sensor runs (default: --alerts; 0 skips it).")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the baseline's alert arrival times.")
    parser.add_argument("--json", type=Path, help="Also write every sample here.")
    args = parser.parse_args()
    baseline_runs = args.alerts if args.baseline is None else args.baseline
    paths = ["rest", "inbox"] if args.via == "both" else [args.via]

    root = scratch_environment("bench_alerts_")
    from integration.conftest import temporary_stack

    from retrainer import alerts
    from retrainer.airflow_api import AirflowClient
    from retrainer.config import load_config
    from retrainer.stack import start_stack, stop_stack

    config_path = _prepare_project(root)
    inbox = alerts.inbox_folder(load_config(config_path).data.root_uri)
    settings = temporary_stack(root / "stack", _dags_folder(root), REPO / "plugins")
    print(f"starting a stack in {root} ...", flush=True)
    started = time.monotonic()
    status = start_stack(settings, timeout=240)
    warmup: dict[str, Any] = {}
    event: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    try:
        with AirflowClient(status.airflow_api_url, status.username, status.password or "") as client:
            client.wait_until_dag_parsed(DAG_ID, timeout=180)
            client.wait_until_dag_parsed(BASELINE_DAG_ID, timeout=180)
            client.unpause(DAG_ID)  # also registers the inbox watcher with the triggerer
            client.unpause(BASELINE_DAG_ID)
            # Not counted: the first alert runs the full retrain (arming the cooldown) on a cold stack, and gives
            # the triggerer time to pick up the inbox watcher.
            warmup = _alert_once(client, "rest", 0, inbox)
            print(
                f"warm-up alert (REST, full retrain): gate started after {warmup['latency_s']:.1f} s", flush=True
            )
            for number in range(1, args.alerts + 1):
                for via in paths:  # alternating, so that load from outside hits both paths alike
                    sample = _alert_once(client, via, number, inbox)
                    event.append(sample)
                    print(
                        f"alert {number} via {via}: gate started after {sample['latency_s']:.1f} s "
                        f"(run {sample['state']}, gate {sample['gate']})",
                        flush=True,
                    )
            rng = random.Random(args.seed)
            for number in range(1, baseline_runs + 1):
                sample = _baseline_once(client, root / "poll_inbox" / str(number), rng.uniform(0, POLL_SECONDS))
                baseline.append(sample)
                print(
                    f"baseline {number}: alert dropped {sample['delay_s']:.0f} s after a poke, "
                    f"retrain_start after {sample['latency_s']:.1f} s",
                    flush=True,
                )
    finally:
        stop_stack(settings)
        shutil.rmtree(root, ignore_errors=True)

    rows = {via: _summary([s for s in event if s["via"] == via]) for via in paths}
    if len(paths) > 1:
        rows["both"] = _summary(event)
    if baseline:
        rows["baseline"] = _summary(baseline)
    label = {**PATH_LABELS, "both": "alerts, both ways"}
    minutes = (time.monotonic() - started) / 60
    print(f"\nAlert -> first retrain task starts, on the embedded stack (bench took {minutes:.0f} min):\n")
    print(f"{'path':<26}{'n':>4}{'median s':>10}{'max s':>9}")
    for via, row in rows.items():
        print(f"{label[via]:<26}{row['n']:>4}{row['median']:>10.1f}{row['max']:>9.1f}")
    queued = [s["run_queued_s"] for s in event if s["run_queued_s"] is not None]
    if queued:
        median, worst = statistics.median(queued), max(queued)
        print(f"\n(event-driven, alert -> run queued: median {median:.1f} s, max {worst:.1f} s)")
    event_median = statistics.median(s["latency_s"] for s in event)
    if baseline:
        ratio = rows["baseline"]["median"] / event_median
        print(f"\nbaseline median / event-driven median = {ratio:.1f}x")
    verdict = "met" if event_median < TARGET_SECONDS else "NOT met"
    print(f"target: event-driven median under {TARGET_SECONDS:.0f} s: {verdict} ({event_median:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"warmup": warmup, "event": event, "baseline": baseline}, indent=2))
    return 0 if event_median < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
