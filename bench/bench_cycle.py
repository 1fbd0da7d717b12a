"""What does orchestration cost? One weekly cycle through Airflow vs the same steps in one Python process.

Both sides run the same cycle on the same week with the same starting state: a champion trained on week 1, and
week 2 landed but not yet validated. Before every repetition the project's data folder is restored from that
state, and the cycle is a dry run (nothing is registered), so every repetition does the same work: validate
(Great Expectations), drift (Evidently), train, evaluate, decide.

- in-process: ``retrainer.steps`` functions called one after the other in this process (imports warm after the
  first repetition, as in a long-lived worker);
- airflow: the weekly DAG triggered on a real embedded stack (scheduler + LocalExecutor + MLflow server on free
  ports), timed from trigger to the run's end; each task runs in a fresh process.

Prints medians side by side, the ratio, and each step's share of the cycle. Usage:

    .venv/bin/python bench/bench_cycle.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _scratch import REPO, restore, scratch_environment  # bench/ is on sys.path when a bench runs as a script

STEPS = ["ingest", "validate", "drift", "train", "evaluate", "promote"]


def _prepare(config_path: Path) -> tuple[Path, str]:
    """Champion from week 1, week 2 landed: returns the template data folder and week 2's cutoff."""
    from retrainer import demo, steps
    from retrainer.config import load_config
    from retrainer.tracking import Tracking

    config, tracking = load_config(config_path), Tracking.from_env()
    weeks = demo.week_starts(demo.DEMO_START, 2)
    demo.land_weeks(config, weeks[0], 1)
    steps.run_cycle(config, tracking, demo.week_cutoff(weeks[0]), trigger="bench")
    demo.land_weeks(config, weeks[1], 1)
    steps.ingest(config, tracking, demo.week_cutoff(weeks[0]))  # registers week 2 as landed, not yet validated
    template = Path(config.data.root_uri).with_name("template")
    shutil.copytree(config.data.root_uri, template)
    return template, demo.week_cutoff(weeks[1]).isoformat()


def _in_process(config_path: Path, cutoff: str) -> dict[str, float]:
    from retrainer import steps
    from retrainer.config import load_config
    from retrainer.tracking import Tracking

    config, tracking = load_config(config_path), Tracking.from_env()
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - started
        return result

    started = time.perf_counter()
    ingested = timed("ingest", steps.ingest, config, tracking, cutoff)
    validated = timed("validate", steps.validate, config, ingested.pending)
    timed("drift", steps.drift, config, tracking, validated.accepted, "bench")
    trained = timed("train", steps.train, config, tracking, cutoff, "bench", require_new_data=validated.accepted)
    evaluation = timed("evaluate", steps.evaluate, config, tracking, trained.run_id)
    timed("promote", steps.promote, config, tracking, trained.run_id, evaluation, dry_run=True)
    timings["total"] = time.perf_counter() - started
    return timings


def _when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _duration(ti: dict) -> float:
    return (_when(ti["end_date"]) - _when(ti["start_date"])).total_seconds()


def through_airflow(client, dag_id: str, cutoff: str, timeout: float = 900) -> dict[str, float]:
    """Trigger a dry-run cycle and wait for it: each step's task time, and ``total`` from the trigger to the end
    Airflow records for the run (so the client's polling interval is not counted)."""
    triggered_at = datetime.now(UTC)
    # force: the in-process side's dry-run candidate already covers this week, which would otherwise skip training.
    run_id = client.trigger(dag_id, conf={"cutoff": cutoff, "dry_run": True, "force": True})
    run = client.wait_for_dag_run(dag_id, run_id, timeout=timeout)
    total = (_when(run["end_date"]) - triggered_at).total_seconds()
    if run["state"] != "success":
        raise RuntimeError(f"benchmark run {run_id} ended {run['state']}")
    instances = client.task_instances(dag_id, run_id)
    # Task ids inside a task group are prefixed (``retrain.train``): keyed by the step's own name.
    states = {ti["task_id"].rsplit(".", 1)[-1]: ti["state"] for ti in instances}
    if any(states.get(step) != "success" for step in STEPS):
        raise RuntimeError(f"benchmark run {run_id}: a step did not run: {states}")
    timings = {ti["task_id"].rsplit(".", 1)[-1]: _duration(ti) for ti in instances if ti.get("end_date")}
    timings["total"] = total
    return timings


def _median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(s.get(key, 0.0) for s in samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    root = scratch_environment("bench_cycle_")
    from integration.conftest import temporary_stack, write_manual_project

    from retrainer.airflow_api import AirflowClient
    from retrainer.stack import start_stack, stop_stack

    config_path = write_manual_project(root, "bench_flights", "bench_flights_arr_delay")
    settings = temporary_stack(root / "stack", REPO / "dags", REPO / "plugins")
    print(f"starting a stack in {root} ...", flush=True)
    status = start_stack(settings, timeout=240)
    os.environ["MLFLOW_TRACKING_URI"] = status.mlflow_url
    os.environ["MLFLOW_TRACKING_USERNAME"] = status.mlflow_username  # MLflow's basic-auth app
    os.environ["MLFLOW_TRACKING_PASSWORD"] = status.mlflow_password or ""
    in_process: list[dict[str, float]] = []
    airflow: list[dict[str, float]] = []
    try:
        template, cutoff = _prepare(config_path)
        data = root / "data"
        dag_id = "retrain_bench_flights"
        with AirflowClient(status.airflow_api_url, status.username, status.password or "") as client:
            client.wait_until_dag_parsed(dag_id, timeout=180)
            client.unpause(dag_id)
            for repeat in range(1, args.repeats + 1):
                restore(template, data)
                in_process.append(_in_process(config_path, cutoff))
                restore(template, data)
                airflow.append(through_airflow(client, dag_id, cutoff))
                print(
                    f"repeat {repeat}: in-process {in_process[-1]['total']:.1f} s, "
                    f"airflow {airflow[-1]['total']:.1f} s",
                    flush=True,
                )
    finally:
        stop_stack(settings)
        shutil.rmtree(root, ignore_errors=True)

    local_total, airflow_total = _median(in_process, "total"), _median(airflow, "total")
    print(f"\nOne weekly cycle (dry run, week 2 of the demo), median of {args.repeats}:\n")
    print(f"{'step':<10}{'in-process s':>14}{'share':>8}{'airflow task s':>16}{'share':>8}{'ratio':>8}")
    for step in STEPS:
        local, remote = _median(in_process, step), _median(airflow, step)
        print(
            f"{step:<10}{local:>14.2f}{local / local_total:>8.0%}{remote:>16.2f}{remote / airflow_total:>8.0%}"
            f"{remote / local if local else float('nan'):>8.1f}"
        )
    med = {step: _median(airflow, step) for step in [*STEPS, "record"]}
    # drift runs beside train -> evaluate -> promote; the rest of the wall time is scheduling and start-up gaps.
    critical = med["ingest"] + med["validate"] + max(med["drift"], med["train"] + med["evaluate"] + med["promote"])
    gaps = airflow_total - critical - med["record"]
    print(f"{'record':<10}{'-':>14}{'':>8}{med['record']:>16.2f}{med['record'] / airflow_total:>8.0%}")
    print(f"{'gaps':<10}{'-':>14}{'':>8}{gaps:>16.2f}{gaps / airflow_total:>8.0%}   (scheduling between tasks)")
    ratio = airflow_total / local_total
    print(f"{'total':<10}{local_total:>14.2f}{'':>8}{airflow_total:>16.2f}{'':>8}{ratio:>8.1f}")
    print(f"\nairflow / in-process = {ratio:.2f}x (in Airflow, drift runs beside train -> evaluate -> promote)")
    if args.json:
        args.json.write_text(json.dumps({"in_process": in_process, "airflow": airflow}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
