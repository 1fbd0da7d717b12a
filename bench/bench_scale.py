"""The whole weekly cycle at 100k, 1M and 10M rows a week: each step's time and peak memory, the linear fit,
and what Airflow adds, side by side in one run.

Usage:
    python bench/bench_scale.py                                  # 100k and 1M rows a week, Airflow at 1M
    python bench/bench_scale.py --rows 100000 1000000 10000000   # and 10M (tens of minutes on 2 cores)

For each size a project (a copy of the demo project) gets the demo's first two weeks resampled with replacement
(seeded) to N rows each. Week 1 trains the champion (not timed); then week 2's cycle runs as a dry run (nothing
is registered, so every repetition does the same work), twice from the same restored state:

- ``in-process``: ``retrainer.steps`` called one after the other in a fresh Python process whose imports are
  loaded first (a warm worker); a thread samples the RSS of the process and its children every 10 ms, so each
  step has its wall time, CPU time and peak memory above what the process held before the step;
- ``airflow`` (sizes in ``--airflow-rows``): the weekly DAG triggered on a real embedded stack (scheduler,
  LocalExecutor, MLflow server on free ports), timed from trigger to the run's end.

Printed: per step and size the seconds, the seconds per million rows, the peak extra memory and its ratio to the
training window's in-memory size (the two weeks' rows as pandas holds them); per step the exponent of the
power-law fit of time against rows (1.0 is linear); and the Airflow ÷ in-process ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _scratch import REPO, restore, scratch_environment  # bench/ is on sys.path when a bench runs as a script

STEPS = ["ingest", "validate", "drift", "train", "evaluate", "promote"]
SEED = 11


# -- the data ----------------------------------------------------------------------------------------------
def land_resampled(config: Any, week_index: int, rows: int) -> str:
    """Land demo week ``week_index`` (0-based) resampled with replacement to ``rows`` rows, in time order."""
    import numpy as np
    import pandas as pd

    from retrainer import demo
    from retrainer.catalog import Catalog

    monday = demo.week_starts(demo.DEMO_START, week_index + 1)[-1]
    week = demo.week_frame(demo.flights_with_weather(), monday, list(config.schema_.columns))
    rng = np.random.default_rng(SEED + week_index)
    frame = week.iloc[np.sort(rng.integers(0, len(week), rows))].reset_index(drop=True)
    # A flight's hour plus random microseconds: distinct rows, as real data has (the platform refuses batches of
    # repeated rows), each still in the hour, and so in the week, it was drawn from.
    timestamp = config.schema_.timestamp
    frame[timestamp] = frame[timestamp] + pd.to_timedelta(rng.integers(0, 3_600_000_000, rows), unit="us")
    return Catalog(config).land(monday.isoformat(), frame)


def window_bytes(config: Any, cutoff: str) -> int:
    """In-memory size of the cycle's training window as the catalog loads it."""
    from retrainer.catalog import Catalog
    from retrainer.steps import training_window

    frame = Catalog(config).load(training_window(config, cutoff))
    return int(frame.memory_usage(deep=True).sum())


# -- memory of a process and its children ------------------------------------------------------------------
class PeakRss:
    """Samples the RSS of this process plus its children every 10 ms; ``peak_since(mark)`` of a step."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def current(self) -> int:
        import psutil

        total = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child may end between listing and reading
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            value = self.current()
            with self._lock:
                self._peak = max(self._peak, value)

    def reset(self) -> int:
        with self._lock:
            self._peak = self.current()
            return self._peak

    def peak(self) -> int:
        with self._lock:
            return max(self._peak, self.current())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# -- the worker: one size, in a fresh process --------------------------------------------------------------
def _prepare(config_path: Path, rows: int) -> dict[str, Any]:
    """Champion from week 1 (resampled), week 2 landed and registered: the state both sides start from."""
    from retrainer import demo, steps
    from retrainer.config import load_config
    from retrainer.tracking import Tracking

    config, tracking = load_config(config_path), Tracking.from_env()
    weeks = demo.week_starts(demo.DEMO_START, 2)
    land_resampled(config, 0, rows)
    steps.run_cycle(config, tracking, demo.week_cutoff(weeks[0]), trigger="bench")
    land_resampled(config, 1, rows)
    steps.ingest(config, tracking, demo.week_cutoff(weeks[0]))  # registers week 2 as landed, not yet validated
    cutoff = demo.week_cutoff(weeks[1]).isoformat()
    return {"cutoff": cutoff}


def _warm_imports() -> None:
    """What a long-lived worker has loaded already: every library a step uses."""
    import evidently  # noqa: F401
    import great_expectations  # noqa: F401
    import mlflow  # noqa: F401
    import sklearn  # noqa: F401
    import xgboost  # noqa: F401

    from retrainer import steps, validation  # noqa: F401


def _in_process(config_path: Path, cutoff: str) -> dict[str, dict[str, float]]:
    from retrainer import steps
    from retrainer.config import load_config
    from retrainer.tracking import Tracking

    _warm_imports()
    config, tracking = load_config(config_path), Tracking.from_env()
    memory = PeakRss()
    figures: dict[str, dict[str, float]] = {}

    def timed(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        before = memory.reset()
        cpu, started = _cpu_seconds(), time.perf_counter()
        result = fn(*args, **kwargs)
        figures[name] = {
            "seconds": time.perf_counter() - started,
            "cpu_seconds": _cpu_seconds() - cpu,
            "peak_extra_bytes": memory.peak() - before,
        }
        return result

    started = time.perf_counter()
    try:
        ingested = timed("ingest", steps.ingest, config, tracking, cutoff)
        validated = timed("validate", steps.validate, config, ingested.pending)
        timed("drift", steps.drift, config, tracking, validated.accepted, "bench")
        trained = timed(
            "train", steps.train, config, tracking, cutoff, "bench", require_new_data=validated.accepted
        )
        evaluation = timed("evaluate", steps.evaluate, config, tracking, trained.run_id)
        timed("promote", steps.promote, config, tracking, trained.run_id, evaluation, dry_run=True)
    finally:
        memory.close()
    figures["total"] = {"seconds": time.perf_counter() - started}
    return figures


def worker(args: argparse.Namespace) -> int:
    from retrainer.config import load_config

    if args.worker == "prepare":
        args.json.write_text(json.dumps(_prepare(args.config, args.rows)))
    else:
        figures = _in_process(args.config, args.cutoff)  # week 2 is accepted now: its window can be measured
        state = {"in_process": figures, "window_bytes": window_bytes(load_config(args.config), args.cutoff)}
        args.json.write_text(json.dumps(state))
    return 0


def _run_worker(mode: str, config_path: Path, out: Path, **options: Any) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", mode, "--config", str(config_path), "--json", str(out)]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    subprocess.run(command, check=True, env=os.environ.copy())
    return json.loads(out.read_text())


# -- the orchestrated side ---------------------------------------------------------------------------------
def _through_airflow(client: Any, dag_id: str, cutoff: str, timeout: float) -> dict[str, dict[str, float]]:
    from bench_cycle import through_airflow

    timings = through_airflow(client, dag_id, cutoff, timeout)
    return {step: {"seconds": seconds} for step, seconds in timings.items()}


def _allow_rows(gx_root: Path, suite: str, rows: int) -> None:
    """Raise the suite's bound on a batch's row count (1M in the demo's suite) to the bench's largest batch."""
    path = gx_root / "expectations" / f"{suite}.json"
    raw = json.loads(path.read_text())
    for expectation in raw["expectations"]:
        if expectation["type"] == "expect_table_row_count_to_be_between":
            expectation["kwargs"]["max_value"] = max(expectation["kwargs"].get("max_value") or 0, rows)
    path.write_text(json.dumps(raw, indent=2))


def _write_project(projects: Path, data_root: Path, rows: int) -> Path:
    import yaml

    name = f"scale_{rows}"
    raw = yaml.safe_load((REPO / "projects" / "flights.yaml").read_text())
    raw["name"], raw["registered_model"] = name, name
    raw["data"]["root_uri"] = str(data_root)
    # No tick inside the date range: only the bench starts runs. Training may take long at 10M rows.
    raw["schedule"] = {"cron": "0 3 * * 1", "start_date": "2013-01-08", "end_date": "2013-01-08T01:00:00Z"}
    raw["training"]["timeout_minutes"] = 240
    raw["training"]["memory"] = "64g"
    path = projects / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# -- the report --------------------------------------------------------------------------------------------
def _exponent(rows: list[int], seconds: list[float]) -> float:
    """Slope of log(time) against log(rows), least squares: 1.0 is linear."""
    import numpy as np

    if len(rows) < 2 or min(seconds) <= 0:
        return float("nan")
    return float(np.polyfit(np.log(rows), np.log(seconds), 1)[0])


def report(results: dict[int, dict[str, Any]]) -> None:
    sizes = sorted(results)
    print("\nIn-process cycle (dry run, week 2), one run per size:\n")
    print(f"{'step':<10}{'rows':>12}{'s':>9}{'s / 1M rows':>13}{'CPU s':>9}{'peak extra MB':>15}{'x window':>10}")
    for step in STEPS:
        for rows in sizes:
            figure = results[rows]["in_process"][step]
            window_mb = results[rows]["window_bytes"] / 1e6
            extra_mb = figure["peak_extra_bytes"] / 1e6
            print(
                f"{step:<10}{rows:>12,}{figure['seconds']:>9.2f}{figure['seconds'] / rows * 1e6:>13.2f}"
                f"{figure['cpu_seconds']:>9.2f}{extra_mb:>15.0f}{extra_mb / window_mb:>10.2f}"
            )
    print(f"\n{'window in memory':<26}" + "".join(f"{results[r]['window_bytes'] / 1e6:>10.0f} MB" for r in sizes))
    print(
        f"{'in-process total s':<26}"
        + "".join(f"{results[r]['in_process']['total']['seconds']:>13.1f}" for r in sizes)
    )
    # Fixed costs (imports aside: loading models, MLflow calls) flatten the small sizes; the slope between the two
    # largest sizes is how a step grows once its rows dominate.
    print("\nPower-law exponent of each step's time against rows (1.0: linear; below: fixed costs still count):")
    largest = f"{sizes[-2]:,} to {sizes[-1]:,}" if len(sizes) > 2 else ""
    print(f"  {'step':<10}{'all sizes':>10}{largest:>26}")
    for step in STEPS:
        seconds = [results[r]["in_process"][step]["seconds"] for r in sizes]
        line = f"  {step:<10}{_exponent(sizes, seconds):>10.2f}"
        if len(sizes) > 2:
            line += f"{_exponent(sizes[-2:], seconds[-2:]):>26.2f}"
        print(line)
    for rows in sizes:
        airflow = results[rows].get("airflow")
        if not airflow:
            continue
        local = results[rows]["in_process"]["total"]["seconds"]
        print(f"\nThrough Airflow at {rows:,} rows a week:")
        for step in STEPS:
            seconds = airflow.get(step, {}).get("seconds", float("nan"))
            mine = results[rows]["in_process"][step]["seconds"]
            print(f"  {step:<10}{seconds:>9.2f} s (in-process {mine:.2f} s)")
        total = airflow["total"]["seconds"]
        ratio = total / local
        print(f"  {'total':<10}{total:>9.2f} s (in-process {local:.2f} s): airflow / in-process = {ratio:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--airflow-rows", type=int, nargs="*", default=[1_000_000], help="Sizes also run via Airflow."
    )
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--report", type=Path, nargs="+", help="Only print the report of earlier --json files.")
    parser.add_argument("--worker", choices=["prepare", "cycle"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cutoff", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.report:
        runs = [json.loads(path.read_text()) for path in args.report]
        report({int(rows): result for run in runs for rows, result in run.items()})
        return 0

    root = scratch_environment("bench_scale_")
    from integration.conftest import temporary_stack

    from retrainer.airflow_api import AirflowClient
    from retrainer.stack import start_stack, stop_stack

    projects = Path(os.environ["RETRAINER_PROJECTS_DIR"])
    projects.mkdir(parents=True)
    paths = {rows: _write_project(projects, root / f"data_{rows}", rows) for rows in args.rows}
    _allow_rows(Path(os.environ["RETRAINER_GX_ROOT"]), "flights_arr_delay", max(args.rows))
    settings = temporary_stack(root / "stack", REPO / "dags", REPO / "plugins")
    print(f"starting a stack in {root} ...", flush=True)
    status = start_stack(settings, timeout=300)
    os.environ["MLFLOW_TRACKING_URI"] = status.mlflow_url
    os.environ["MLFLOW_TRACKING_USERNAME"] = status.mlflow_username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = status.mlflow_password or ""
    results: dict[int, dict[str, Any]] = {}
    try:
        with AirflowClient(status.airflow_api_url, status.username, status.password or "") as client:
            for rows in sorted(args.rows):
                data = root / f"data_{rows}"
                print(f"{rows:,} rows a week: landing and training the champion ...", flush=True)
                state = _run_worker("prepare", paths[rows], root / f"prepare_{rows}.json", rows=rows)
                template = root / f"template_{rows}"
                shutil.copytree(data, template)
                print(f"{rows:,} rows a week: the cycle in process ...", flush=True)
                out = root / f"cycle_{rows}.json"
                results[rows] = _run_worker("cycle", paths[rows], out, cutoff=state["cutoff"])
                figures = results[rows]["in_process"]
                print(f"  in process: {figures['total']['seconds']:.1f} s", flush=True)
                if rows in (args.airflow_rows or []):
                    restore(template, data)
                    dag_id = f"retrain_scale_{rows}"
                    client.wait_until_dag_parsed(dag_id, timeout=300)
                    client.unpause(dag_id)
                    timeout = 600 + 20 * figures["total"]["seconds"]
                    # Warm, as the in-process side is: the stack's first run also starts its worker processes.
                    print(f"{rows:,} rows a week: a first, untimed cycle through Airflow ...", flush=True)
                    _through_airflow(client, dag_id, state["cutoff"], timeout)
                    restore(template, data)
                    print(f"{rows:,} rows a week: the cycle through Airflow ...", flush=True)
                    results[rows]["airflow"] = _through_airflow(client, dag_id, state["cutoff"], timeout)
                    print(f"  through Airflow: {results[rows]['airflow']['total']['seconds']:.1f} s", flush=True)
                shutil.rmtree(template)
    finally:
        stop_stack(settings)
        shutil.rmtree(root, ignore_errors=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
