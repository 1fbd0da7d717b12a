"""xgboost on the GPU against the CPU (``training.device: cuda`` vs ``cpu``), for the same data and parameters.

Each size is the demo project's four-week training window, each week resampled (seeded, with replacement) to a
quarter of the rows, exactly as ``bench_training.py`` builds its ~1M-row window. The model is the demo project's
(``projects/flights.yaml``: 200 trees of depth 6, ``hist``), fitted through ``modeling.fit_on_device``, the
function the trainer runs, alternately:

- **CPU, training.cpus threads**: ``device: cpu`` with the project's ``n_jobs`` (what a trainer container with
  ``cpus: 2`` gets);
- **CPU, all cores**: ``device: cpu`` with ``n_jobs`` set to every core of the machine;
- **GPU**: ``device: cuda``, otherwise the same.

Reported: the median fit time (preprocessing included, as the train step pays it), the preprocessing's own time,
the first GPU fit (it pays for the CUDA context, as every fresh trainer process does), GPU ÷ CPU, the same for
xgboost's own fit on the preprocessed matrix (the part a GPU can speed up), and each model's RMSE on the same
held-out week (the real rows of the week after the window), so that speed is not bought with quality.
Needs an NVIDIA GPU; exits with a message where xgboost finds none. Usage:
    .venv/bin/python bench/bench_gpu.py [--rows 1000000 4000000] [--repeats 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

WEEKS = 4


def _gpu_name() -> str:
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        return subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sys.exit("bench_gpu: no NVIDIA GPU here (nvidia-smi is missing or fails); run it on a machine with one")


def _variants(config: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    def on(device: str) -> Any:
        return config.model_copy(update={"training": config.training.model_copy(update={"device": device})})

    threads = config.estimator.params.get("n_jobs")
    cores = os.cpu_count() or 1
    return {
        f"CPU, {threads} threads": (on("cpu"), {}),
        f"CPU, all {cores} cores": (on("cpu"), {"n_jobs": cores}),
        "GPU": (on("cuda"), {}),
    }


def _window(config: Any, all_flights: Any, rows: int) -> tuple[Any, Any]:
    """The resampled four-week window and the real rows of the week after it (the held-out week)."""
    import pandas as pd

    from retrainer import demo

    columns = list(config.schema_.columns)
    mondays = demo.week_starts(demo.DEMO_START, WEEKS + 1)
    weeks = [
        demo.week_frame(all_flights, monday, columns).sample(
            n=rows // WEEKS, replace=True, random_state=monday.toordinal()
        )
        for monday in mondays[:WEEKS]
    ]
    return pd.concat(weeks, ignore_index=True), demo.week_frame(all_flights, mondays[WEEKS], columns)


def _preprocessed(config: Any, train: Any) -> tuple[Any, Any, float]:
    """The training matrix as the pipeline's preprocessing makes it, the target, and the seconds it took."""
    from retrainer import modeling

    features, target = modeling.prepare(train, config)
    preprocess = modeling.build_pipeline(config).named_steps["preprocess"]
    started = time.perf_counter()
    matrix = preprocess.fit_transform(features)
    return matrix, target, time.perf_counter() - started


def _xgboost_alone(variant: Any, overrides: dict[str, Any], matrix: Any, target: Any) -> float:
    """Seconds of the estimator's own fit on the preprocessed matrix (the part the GPU can speed up)."""
    from retrainer import modeling

    device = {"device": "cuda"} if variant.training.device == "cuda" else {}
    estimator = modeling.make_estimator(variant, {**device, **overrides})
    started = time.perf_counter()
    estimator.fit(matrix, target)
    return time.perf_counter() - started


def main() -> None:
    from retrainer import modeling
    from retrainer.config import load_config
    from retrainer.demo import flights_with_weather

    gpu_name = _gpu_name()
    config = load_config(REPO / "projects" / "flights.yaml")
    variants = _variants(config)
    all_flights = flights_with_weather()
    rows_out: list[dict[str, Any]] = []
    warm_up, _ = _window(config, all_flights, 4_000)
    modeling.fit_on_device(warm_up, config)  # imports, unmeasured
    for rows in ARGS.rows:
        train, holdout = _window(config, all_flights, rows)
        matrix, target, preprocess_s = _preprocessed(config, train)
        times: dict[str, list[float]] = {name: [] for name in variants}
        alone: dict[str, list[float]] = {name: [] for name in variants}
        rmse: dict[str, float] = {}
        first_gpu = None
        for repeat in range(ARGS.repeats):
            for name, (variant, overrides) in variants.items():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    started = time.perf_counter()
                    fitted = modeling.fit_on_device(train, variant, overrides)
                    elapsed = time.perf_counter() - started
                fallback = [str(w.message) for w in caught if "GPU" in str(w.message)]
                if variant.training.device == "cuda" and (fallback or not fitted.device.startswith("cuda")):
                    sys.exit(f"bench_gpu: xgboost did not train on the GPU ({fitted.device}): {fallback}")
                if name == "GPU" and first_gpu is None:
                    first_gpu = elapsed
                if name != "GPU" or repeat > 0 or ARGS.repeats == 1:  # the first GPU fit apart, given a choice
                    times[name].append(elapsed)
                rmse[name] = modeling.score(fitted.pipeline, holdout, config)["rmse"]
                alone[name].append(_xgboost_alone(variant, overrides, matrix, target))
                print(
                    f"{rows:,} rows #{repeat + 1} {name} ({fitted.device}): fit {elapsed:.2f} s, "
                    f"xgboost alone {alone[name][-1]:.2f} s",
                    flush=True,
                )
        medians = {name: statistics.median(values) for name, values in times.items()}
        alone_medians = {name: statistics.median(values) for name, values in alone.items()}
        cpu_threads, cpu_all, _ = variants
        rows_out.append(
            {
                "rows": len(train),
                "preprocess s": round(preprocess_s, 2),
                **{f"fit {name} s": round(value, 2) for name, value in medians.items()},
                "first GPU fit s": round(first_gpu or 0.0, 2),
                f"GPU ÷ {cpu_threads}": round(medians["GPU"] / medians[cpu_threads], 3),
                f"GPU ÷ {cpu_all}": round(medians["GPU"] / medians[cpu_all], 3),
                **{f"xgboost alone {name} s": round(value, 2) for name, value in alone_medians.items()},
                f"xgboost alone GPU ÷ {cpu_threads}": round(alone_medians["GPU"] / alone_medians[cpu_threads], 3),
                f"xgboost alone GPU ÷ {cpu_all}": round(alone_medians["GPU"] / alone_medians[cpu_all], 3),
                **{f"rmse {name}": round(value, 3) for name, value in rmse.items()},
            }
        )
    print(f"\nGPU: {gpu_name}; {os.cpu_count()} CPU cores; median of {ARGS.repeats} (GPU: after its first fit)")
    header = list(rows_out[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows_out:
        print("| " + " | ".join(f"{row[key]:,}" if key == "rows" else str(row[key]) for key in header) + " |")
    if ARGS.json:
        results = {"gpu": gpu_name, "cores": os.cpu_count(), "rows": rows_out}
        Path(ARGS.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this JSON file")
    ARGS = parser.parse_args()
    main()
