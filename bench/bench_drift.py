"""The drift step's verdicts against the NumPy floor and Evidently, side by side, at 100k to 10M rows a side.

Usage:
    python bench/bench_drift.py                         # 100k and 1M rows
    python bench/bench_drift.py --rows 1000000 10000000 --no-evidently-above 1000000

The data is the demo's: the 14 drift columns of 2013's flights with their weather (10 numeric, 4 categorical),
resampled with replacement to the row count, the reference from January and February, the batch from June (a
real seasonal shift). Three ways to the same per-column verdicts, each in a fresh process that first builds the
two frames, then runs once while a thread samples its RSS every 5 ms:

- ``floor``: the statistics alone, written directly in NumPy/SciPy over the frames' columns (Wasserstein
  distance over the reference's std for numeric columns, Jensen-Shannon over value counts for categorical ones);
- ``retrainer``: ``retrainer.drift.measure``, what the drift step computes its verdicts with (every check and
  cleaning included);
- ``evidently``: Evidently's ``DataDriftPreset`` report over all rows (what the drift step ran before).

Printed per row count: CPU seconds (the process's user + system time of the run), peak extra memory (peak RSS
of the run above the RSS before it) and both as ratios to the floor; and whether the verdicts agree.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import threading
import time
from typing import Any

SEED = 7


def frames(rows: int) -> tuple[Any, Any, dict[str, str], Any]:
    """Reference (January-February) and batch (June) of ``rows`` rows each, the column types and the rule."""
    import numpy as np
    import pandas as pd

    from retrainer import demo
    from retrainer.config import load_config
    from retrainer.stack import REPO_ROOT

    project = load_config(REPO_ROOT / "projects" / "flights.yaml")
    types = {c: "numeric" for c in project.numeric_features} | {
        c: "categorical" for c in project.categorical_features
    }
    flights = demo.flights_with_weather()[list(types)]
    month = demo.flights_with_weather()["time_hour"].dt.month.to_numpy()
    rng = np.random.default_rng(SEED)

    def resampled(months: list[int]) -> pd.DataFrame:
        pool = np.flatnonzero(np.isin(month, months))
        return flights.iloc[rng.choice(pool, rows)].reset_index(drop=True)

    return resampled([1, 2]), resampled([6]), types, project.drift


def floor(current: Any, reference: Any, types: dict[str, str], rule: Any) -> list[bool]:
    """The statistics and nothing else: each column's values to NumPy, its statistic, its verdict."""
    import numpy as np
    import pandas as pd
    from scipy.spatial import distance
    from scipy.stats import wasserstein_distance

    verdicts = []
    for column, kind in types.items():
        if kind == "numeric":
            ref = reference[column].to_numpy(dtype="float64", na_value=np.nan)
            cur = current[column].to_numpy(dtype="float64", na_value=np.nan)
            ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
            value = wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)
            verdicts.append(bool(value >= rule.num_threshold))
        else:
            ref, cur = reference[column].dropna().to_numpy(), current[column].dropna().to_numpy()
            codes, uniques = pd.factorize(np.concatenate([ref, cur]))
            ref_counts = np.bincount(codes[: ref.size], minlength=len(uniques)) / ref.size
            cur_counts = np.bincount(codes[ref.size :], minlength=len(uniques)) / cur.size
            verdicts.append(bool(distance.jensenshannon(ref_counts, cur_counts) >= rule.cat_threshold))
    return verdicts


def ours(current: Any, reference: Any, types: dict[str, str], rule: Any) -> list[bool]:
    from retrainer.drift import measure

    return [c.drifted for c in measure(current, reference, types, rule)]


def evidently(current: Any, reference: Any, types: dict[str, str], rule: Any) -> list[bool]:
    from retrainer.drift import _evidently_report, parse_snapshot

    numeric = [c for c, k in types.items() if k == "numeric"]
    categorical = [c for c, k in types.items() if k == "categorical"]
    snapshot = _evidently_report(current, reference, numeric, categorical, list(types), rule)
    return [c.drifted for c in parse_snapshot(snapshot.dict(), list(types), types)]


VARIANTS = {"floor": floor, "retrainer": ours, "evidently": evidently}


def _measure(variant: str, rows: int, out: Any) -> None:
    """In a fresh process: build the frames, then time one run and sample its peak RSS."""
    import psutil

    reference, current, types, rule = frames(rows)
    # Imports are not the run's cost (a worker pays them once): load what the variants use first.
    import scipy.spatial
    import scipy.stats  # noqa: F401

    import retrainer.drift  # noqa: F401

    if variant == "evidently":
        import evidently  # noqa: F401
        from evidently.presets import DataDriftPreset  # noqa: F401
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    running = threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = resource.getrusage(resource.RUSAGE_SELF)
    verdicts = VARIANTS[variant](current, reference, types, rule)
    end = resource.getrusage(resource.RUSAGE_SELF)
    running.clear()
    sampler.join()
    cpu = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
    out.put({"cpu_s": cpu, "extra_mb": (peak[0] - before) / 2**20, "verdicts": verdicts})


def run(variant: str, rows: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure, args=(variant, rows, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="rows a side")
    parser.add_argument(
        "--no-evidently-above", type=int, default=1_000_000, help="skip Evidently above this many rows (slow)"
    )
    args = parser.parse_args(argv)
    print("| rows a side | way | CPU s | ratio to floor | peak extra MB | ratio | verdicts as the floor's |")
    print("|---|---|---|---|---|---|---|")
    for rows in args.rows:
        base = run("floor", rows)
        for variant in VARIANTS:
            if variant == "evidently" and rows > args.no_evidently_above:
                continue
            result = base if variant == "floor" else run(variant, rows)
            same = "yes" if result["verdicts"] == base["verdicts"] else "NO"
            print(
                f"| {rows:,} | {variant} | {result['cpu_s']:.2f} | {result['cpu_s'] / base['cpu_s']:.2f} | "
                f"{result['extra_mb']:.0f} | {result['extra_mb'] / max(base['extra_mb'], 1):.2f} | {same} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
