"""What the promotion gate costs, as a share of the cycle: 10k, 100k and 1M held-out rows.

For each size, one run measures side by side, on the same synthetic flights-like data (12 numeric features, two
categorical ones with 3 and 16 values, a regression target):

- ``train``: fitting the candidate (xgboost, the demo's parameters) on the window, 4 held-out sizes of rows
  (the holdout is the newest 20% of the window);
- ``predict``: both models on the held-out rows;
- ``resampling``: drawing the bootstrap resamples, once (as the evaluate step does);
- ``bootstrap``: the paired bootstrap of rmse and mae (the demo's primary and secondary metric);
- ``compatibility``: the rows the candidate breaks, with its interval;
- ``slices``: the primary metric per slice of both categorical columns, Holm-corrected.

The gate is resampling + bootstrap + compatibility + slices; the cycle is train + predict + gate. The target
(issue 11) is a gate under 10% of the cycle at 1M held-out rows. Usage::

    .venv/bin/python bench/bench_gate.py [--sizes 10000 100000 1000000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from retrainer.comparison import Resampling, compare, compare_slices, compatibility


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 12)).astype(np.float32)
    frame = pd.DataFrame(numeric, columns=[f"x{i}" for i in range(12)])
    frame["origin"] = pd.Categorical(rng.choice(["EWR", "JFK", "LGA"], rows))
    frame["carrier"] = pd.Categorical(rng.choice([f"C{i:02d}" for i in range(16)], rows, p=_shares(16, rng)))
    effect = frame["origin"].cat.codes.to_numpy() * 3.0 + frame["carrier"].cat.codes.to_numpy() * 0.5
    frame["y"] = 10 * numeric[:, 0] - 4 * numeric[:, 1] + 2 * numeric[:, 2] ** 2 + effect + rng.normal(0, 8, rows)
    return frame


def _shares(n: int, rng: np.random.Generator) -> np.ndarray:
    weights = rng.pareto(1.2, n) + 0.05  # a few big carriers, many small ones, as in the demo
    return weights / weights.sum()


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def run(holdout_rows: int, resamples: int) -> dict[str, Any]:
    import xgboost

    params = {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1, "subsample": 0.9, "n_jobs": 2}
    features = [f"x{i}" for i in range(12)] + ["origin", "carrier"]
    window = _frame(holdout_rows * 4, seed=1)
    champion_data = _frame(holdout_rows * 4, seed=2)
    holdout = _frame(holdout_rows, seed=3)
    champion = xgboost.XGBRegressor(**params, tree_method="hist", enable_categorical=True, random_state=0)
    champion.fit(champion_data[features], champion_data["y"])
    candidate = xgboost.XGBRegressor(**params, tree_method="hist", enable_categorical=True, random_state=0)
    _, train_s = _timed(lambda: candidate.fit(window[features], window["y"]))
    (c, h), predict_s = _timed(lambda: (candidate.predict(holdout[features]), champion.predict(holdout[features])))
    y = holdout["y"].to_numpy()
    # As the evaluate step does: the resamples are drawn once, and every figure is computed from them.
    shared, resampling_s = _timed(lambda: Resampling.draw(len(y), resamples=resamples, seed=0))
    options = {"confidence": 0.95, "resampling": shared}
    comparisons, bootstrap_s = _timed(
        lambda: compare({"rmse": False, "mae": False}, "regression", y, c, h, **options)
    )
    broken, compatibility_s = _timed(lambda: compatibility("regression", y, c, h, **options))
    slices, slices_s = _timed(
        lambda: compare_slices(
            "rmse",
            False,
            "regression",
            y,
            c,
            h,
            {
                "origin": holdout["origin"].astype(str).to_numpy(),
                "carrier": holdout["carrier"].astype(str).to_numpy(),
            },
            min_rows=200,
            margin=0.05,
            alpha=0.05,
            **options,
        )
    )
    gate_s = resampling_s + bootstrap_s + compatibility_s + slices_s
    cycle_s = train_s + predict_s + gate_s
    return {
        "holdout_rows": holdout_rows,
        "train_s": round(train_s, 2),
        "predict_s": round(predict_s, 2),
        "resampling_s": round(resampling_s, 2),
        "bootstrap_s": round(bootstrap_s, 2),
        "compatibility_s": round(compatibility_s, 2),
        "slices_s": round(slices_s, 2),
        "slices": len(slices),
        "resamples_drawn": comparisons["rmse"].resamples,
        "gate_s": round(gate_s, 2),
        "gate_share_of_cycle": round(gate_s / cycle_s, 3),
        "broken_rows": round(broken.rate, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps({"machine": platform.platform(), "cpus": __import__("os").cpu_count()}))
    for size in args.sizes:
        print(json.dumps(run(size, args.resamples)), flush=True)


if __name__ == "__main__":
    main()
