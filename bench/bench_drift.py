"""Time Evidently's drift report against a plain scipy K-S test over the same numeric columns.

Usage:
    python bench/bench_drift.py                 # 10k and 100k rows
    python bench/bench_drift.py --rows 10000    # one size
    python bench/bench_drift.py --rows 10000 100000 --columns 10 --repeats 3

Each timing is the median of ``--repeats`` runs. The Evidently timing is one ``Report`` run with a
``DataDriftPreset`` (``num_method="ks"``, explicit numeric column types, HTML not written); the scipy timing
is ``scipy.stats.ks_2samp`` per column. Evidently's first run in a process pays for imports and warm-up, so
one untimed run precedes the measurements.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd


def make_frames(rows: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current frames of normal columns, the current one slightly shifted."""
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(columns)]
    reference = pd.DataFrame(rng.normal(0.0, 1.0, (rows, columns)), columns=names)
    current = pd.DataFrame(rng.normal(0.05, 1.0, (rows, columns)), columns=names)
    return reference, current


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    """One Evidently drift report (K-S on every numeric column)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(reference.columns)
    definition = DataDefinition(numerical_columns=columns)
    report = Report([DataDriftPreset(columns=columns, num_method="ks", num_threshold=0.05)])
    snapshot = report.run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    snapshot.dict()


def run_scipy(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    """scipy.stats.ks_2samp on every column."""
    from scipy.stats import ks_2samp

    for column in reference.columns:
        ks_2samp(reference[column].to_numpy(), current[column].to_numpy())


def median_seconds(func: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000], help="row counts to time")
    parser.add_argument("--columns", type=int, default=10, help="numeric columns (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing; the median is kept")
    args = parser.parse_args(argv)

    warm_reference, warm_current = make_frames(1_000, args.columns)
    run_evidently(warm_reference, warm_current)

    print(f"{args.columns} numeric columns, median of {args.repeats} runs")
    print(f"{'rows':>10}  {'evidently s':>12}  {'scipy ks s':>11}  {'ratio':>8}")
    for rows in args.rows:
        reference, current = make_frames(rows, args.columns)
        evidently_s = median_seconds(lambda r=reference, c=current: run_evidently(r, c), args.repeats)
        scipy_s = median_seconds(lambda r=reference, c=current: run_scipy(r, c), args.repeats)
        ratio = evidently_s / scipy_s if scipy_s > 0 else float("inf")
        print(f"{rows:>10,}  {evidently_s:>12.3f}  {scipy_s:>11.4f}  {ratio:>7.0f}x")


if __name__ == "__main__":
    main()
