"""What serving one model costs, measured the way a consumer loads it, and whether a candidate may ship.

:func:`measure` runs inside a fresh process (``python -m retrainer.serving``, started by
:func:`retrainer.steps.serving_check`): it loads ``models:/<model>/<version>`` with ``mlflow.pyfunc`` and
predicts a batch, so the figures are those of a consumer, not of the training process that has the model's
libraries warm. :func:`judge` compares the candidate's figures with the budgets and with the champion's.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.config import ServingConfig

CHUNK_ROWS = 1000
MIN_TIMINGS = 50
MIN_TIMING_S = 0.5


class ServingFigures(BaseModel):
    """One model, loaded and predicting as a consumer would.

    Attributes:
        model_uri: What was loaded (``models:/<model>/<version>``).
        rows: Rows predicted.
        problem: What is wrong with loading or the output (None: nothing).
        load_s: Seconds to load the model.
        p95_ms_per_1k_rows: 95th percentile of the prediction latency, per 1,000 rows.
        peak_memory_mb: Memory one loaded copy of the model and a prediction of the batch take.
    """

    model_uri: str
    rows: int
    problem: str | None = None
    load_s: float = 0.0
    p95_ms_per_1k_rows: float = 0.0
    peak_memory_mb: float = 0.0

    def text(self) -> str:
        """``p95 2.1 ms per 1,000 rows, +35 MB``."""
        return f"p95 {self.p95_ms_per_1k_rows:.3g} ms per 1,000 rows, +{self.peak_memory_mb:.0f} MB"


def output_problem(predictions: object, rows: int) -> str | None:
    """Why these predictions could not be served (length, type, NaN or infinity); None if they can."""
    import numpy as np

    values = np.asarray(predictions)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or len(values) != rows:
        return f"{rows} rows in, output of shape {values.shape} out"
    if not (np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.bool_)):
        return f"output of type {values.dtype}, not numbers"
    bad = int((~np.isfinite(values.astype("float64"))).sum())
    if bad:
        return f"{bad} of {rows} predictions are NaN or infinite"
    return None


def _rss_mb() -> float:
    """The resident size now (Linux ``/proc/self/statm``), or the peak where there is no /proc."""
    try:
        pages = int(open("/proc/self/statm").read().split()[1])  # noqa: SIM115 — one read of a proc file
    except (OSError, IndexError, ValueError):  # no /proc: the peak so far
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return pages * resource.getpagesize() / 2**20


def measure(model_uri: str, features: pd.DataFrame, model_path: str | None = None) -> ServingFigures:
    """Load ``model_uri`` (from ``model_path`` when its files were fetched already) with ``mlflow.pyfunc`` in
    this process and predict ``features``.

    Load time: the first load, the model's libraries imported on the way, as a consumer pays it. Memory: what a
    second copy of the model and a prediction of the whole batch take once the libraries are in (the larger of
    the Python and NumPy allocations traced by ``tracemalloc`` and the rise of the resident size, for native
    libraries). Latency: after a warm-up, calls on 1,000 rows (a smaller batch is repeated up to 1,000 rows), at
    least 50 of them and for at least half a second, without tracing. Meant for a fresh process.
    """
    import gc
    import tracemalloc

    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    rows = len(features)
    if not rows:
        return ServingFigures(model_uri=model_uri, rows=0, problem="the batch has no rows to predict")
    source = model_path or model_uri
    started = time.perf_counter()
    try:
        model = mlflow.pyfunc.load_model(source)
    except Exception as error:  # any failure to load is the finding
        return ServingFigures(model_uri=model_uri, rows=rows, problem=f"cannot load: {error}")
    load_s = time.perf_counter() - started
    try:
        problem = output_problem(model.predict(features), rows)
    except Exception as error:  # a consumer's failing predict is the finding
        return ServingFigures(model_uri=model_uri, rows=rows, load_s=load_s, problem=f"cannot predict: {error}")
    gc.collect()
    resident = _rss_mb()
    tracemalloc.start()
    try:
        copy = mlflow.pyfunc.load_model(source)
        copy.predict(features)
        traced_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    memory = max(traced_mb, _rss_mb() - resident, 0.0)
    del copy
    repeated = pd.concat([features] * -(-CHUNK_ROWS // rows), ignore_index=True)  # at least 1,000 rows
    chunks = [repeated.iloc[i : i + CHUNK_ROWS] for i in range(0, len(repeated) - CHUNK_ROWS + 1, CHUNK_ROWS)]
    timings: list[float] = []
    model.predict(chunks[0])  # warm-up
    deadline = time.perf_counter() + MIN_TIMING_S
    while len(timings) < MIN_TIMINGS or time.perf_counter() < deadline:
        for chunk in chunks:
            started = time.perf_counter()
            model.predict(chunk)
            timings.append((time.perf_counter() - started) * 1000)
    return ServingFigures(
        model_uri=model_uri,
        rows=rows,
        problem=problem,
        load_s=round(load_s, 3),
        p95_ms_per_1k_rows=round(float(np.percentile(timings, 95)), 4),
        peak_memory_mb=round(memory, 1),
    )


def judge(candidate: ServingFigures, champion: ServingFigures | None, budget: ServingConfig) -> tuple[bool, str]:
    """Whether the candidate may serve, and why, in words.

    It fails on a problem with loading or the output, on a latency or memory over the budget, or on a latency
    or memory over ``max_factor_vs_champion`` times the champion's (unless under the noise floor). A champion
    that could not be measured is named, not held against the candidate.
    """
    failures = []
    if candidate.problem:
        failures.append(candidate.problem)
    else:
        limit = budget.max_p95_ms_per_1k_rows
        if limit is not None and candidate.p95_ms_per_1k_rows > limit:
            failures.append(
                f"p95 {candidate.p95_ms_per_1k_rows:.3g} ms per 1,000 rows exceeds the budget {limit:g}"
            )
        if budget.max_peak_memory_mb is not None and candidate.peak_memory_mb > budget.max_peak_memory_mb:
            failures.append(
                f"+{candidate.peak_memory_mb:.0f} MB exceeds the memory budget {budget.max_peak_memory_mb:g} MB"
            )
        factor = budget.max_factor_vs_champion
        if champion is not None and champion.problem is None and factor is not None:
            if candidate.p95_ms_per_1k_rows > max(
                factor * champion.p95_ms_per_1k_rows, budget.latency_noise_floor_ms
            ):
                failures.append(
                    f"p95 {candidate.p95_ms_per_1k_rows:.3g} ms per 1,000 rows is over {factor:g} times "
                    f"the champion's {champion.p95_ms_per_1k_rows:.3g}"
                )
            if candidate.peak_memory_mb > max(factor * champion.peak_memory_mb, budget.memory_noise_floor_mb):
                failures.append(
                    f"+{candidate.peak_memory_mb:.0f} MB is over {factor:g} times the champion's "
                    f"+{champion.peak_memory_mb:.0f} MB"
                )
    compared = ""
    if champion is not None:
        compared = (
            f" (champion: {champion.text()})"
            if champion.problem is None
            else (f" (champion not measured: {champion.problem})")
        )
    if failures:
        return False, f"serving check failed: {'; '.join(failures)}{compared}"
    return True, f"serving check passed: {candidate.text()} on {candidate.rows} rows{compared}"


def main(argv: list[str] | None = None) -> None:
    """``python -m retrainer.serving --model-uri URI [--model-path DIR] --features FILE``: measure one model in
    this fresh process and print its figures as one JSON line (the probe of ``retrainer serving-check``, which
    fetches the files first so that the probe needs no MLflow server).
    """
    import argparse

    import pandas as pd

    parser = argparse.ArgumentParser(prog="python -m retrainer.serving", description=main.__doc__)
    parser.add_argument("--model-uri", required=True, help="models:/<model>/<version>, loaded with mlflow.pyfunc")
    parser.add_argument("--model-path", help="the model's files, fetched already (default: fetch model-uri)")
    parser.add_argument("--features", required=True, help="Parquet file of the model's input columns")
    args = parser.parse_args(argv)
    figures = measure(args.model_uri, pd.read_parquet(args.features), args.model_path)
    sys.stdout.write(figures.model_dump_json() + "\n")


if __name__ == "__main__":
    main()
