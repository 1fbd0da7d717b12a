"""Drift verdicts that mean the same at any batch size (``drift.calibration: resampled``).

A fixed distance threshold flags noise on small batches (500 rows of the very same distribution are often 0.1
apart), and a p-value test flags every tiny shift on large ones. Calibrated, a column drifts only when both hold:

1. **the shift is real**: its statistic lies beyond what the reference's own variability gives a batch of this
   size, with false alarms controlled across the columns (``drift.correction``: ``bonferroni`` bounds the chance
   of any false alarm in a batch by ``drift.false_alarm_rate``; ``benjamini_hochberg`` bounds the expected
   share of false alarms among the drifted columns by it);
2. **the shift matters**: the distance reaches the project's threshold (``num_threshold``/``cat_threshold``), as
   before. A p-value test (``ks``, ``chisquare``) has no distance: its p-value enters the correction directly.

How the null is measured, for distances: ``calibration_resamples`` times, two disjoint samples are drawn from the
reference (the calibration size: the batch's rows up to 5,000, against up to 10,000 rows) and their distance
computed with the project's own statistic. Distances between samples of one distribution shrink as the samples
grow, as ``1/sqrt(n_eff)`` for ``wasserstein`` and ``jensenshannon`` and as ``1/n_eff`` for ``psi`` (``n_eff =
n m / (n + m)`` of the two sizes), so the resampled distances are rescaled from the calibration sizes to the
batch's and the reference's. A lognormal distribution fitted to them gives each column's p-value, tails beyond
the resamples included (against simulated nulls of normal and exponential columns its tail p-values were 1.5 to
5 times the true ones: conservative, where a gamma fit's fell below them). The cost does not grow with the
batch: at most ``resamples`` distances between 15,000 values per column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from retrainer import drift_stats
from retrainer.drift_methods import P_VALUE_METHODS, SHRINK_EXPONENT
from retrainer.drift_stats import ColumnValues

if TYPE_CHECKING:
    from retrainer.config import DriftConfig

CALIBRATION_ROWS = 5_000  # batch rows a resample has at most
CALIBRATION_REFERENCE_ROWS = 10_000  # reference rows it is compared with, at most


def effective_size(rows: int, reference_rows: int) -> float:
    """The effective size ``n m / (n + m)`` of a two-sample comparison."""
    return rows * reference_rows / (rows + reference_rows)


def null_p_value(
    method: str,
    reference: ColumnValues,
    current: ColumnValues,
    value: float,
    resamples: int,
    rng: np.random.Generator,
) -> float:
    """The p-value of a distance ``value`` between ``current`` and ``reference`` when both came from the
    reference's distribution, from resampled distances rescaled to the samples' sizes (see the module).

    Raises:
        ValueError: ``method`` is no distance this module can calibrate, or the reference is too small to
            resample (fewer than 20 present values).
    """
    from scipy import stats

    if method not in SHRINK_EXPONENT:
        raise ValueError(
            f"drift method {method!r} cannot be calibrated: use one of {sorted(SHRINK_EXPONENT)} or a p-value "
            "test (ks, chisquare)"
        )
    if not np.isfinite(value):
        return 1.0
    pool = reference.values
    if reference.kind == "categorical":  # integer codes: resamples are counted without hashing text again
        import pandas as pd

        pool = pd.factorize(pool)[0]
    if pool.size < 20:
        raise ValueError(f"{pool.size} reference values are too few to calibrate drift (at least 20)")
    batch = min(current.values.size, CALIBRATION_ROWS, pool.size // 2)
    base = min(pool.size - batch, CALIBRATION_REFERENCE_ROWS)
    nulls = np.empty(resamples)
    for i in range(resamples):
        drawn = rng.choice(pool.size, size=batch + base, replace=False)  # two disjoint samples
        sample = ColumnValues(reference.kind, pool[drawn[:batch]], batch)
        against = ColumnValues(reference.kind, pool[drawn[batch : batch + base]], base)
        nulls[i] = drift_stats.score(method, against, sample)
    shrink = effective_size(batch, base) / effective_size(current.values.size, pool.size)
    scale = shrink ** SHRINK_EXPONENT[method]
    nulls = nulls[np.isfinite(nulls) & (nulls > 0)] * scale
    if nulls.size < 2 or value <= 0:
        return 1.0
    logs = np.log(nulls)
    spread = float(logs.std(ddof=1))
    if spread == 0:  # every resample the same: only a larger value is unlikely
        return 1.0 if value <= nulls[0] else 0.0
    # Lognormal tails: checked against simulated nulls, at or above the true p-value where gamma's fell below.
    return float(stats.norm.sf((np.log(value) - float(logs.mean())) / spread))


def significant(p_values: list[float], rate: float, correction: str) -> list[bool]:
    """Which columns' shifts are real, with false alarms controlled across them by ``correction``."""
    if not p_values:
        return []
    p = np.asarray(p_values, dtype="float64")
    if correction == "bonferroni":
        return list(p <= rate / p.size)
    if correction == "benjamini_hochberg":
        from scipy.stats import false_discovery_control

        return list(false_discovery_control(p, method="bh") <= rate)
    raise ValueError(f"drift.correction must be bonferroni or benjamini_hochberg, got {correction!r}")


def column_p_value(
    method: str,
    reference: ColumnValues,
    current: ColumnValues,
    value: float,
    rule: DriftConfig,
    rng: np.random.Generator,
) -> float:
    """A column's p-value: a p-value test's own, a distance's from its resampled null (:func:`null_p_value`)."""
    if method in P_VALUE_METHODS:
        return value if np.isfinite(value) else 1.0
    return null_p_value(method, reference, current, value, rule.calibration_resamples, rng)


def calibrated_verdicts(
    methods: list[str], values: list[float], thresholds: list[float], p_values: list[float], rule: DriftConfig
) -> list[bool]:
    """Each column's calibrated verdict: significant after ``rule.correction`` at ``rule.false_alarm_rate`` and,
    for a distance, at least its threshold."""
    real = significant(p_values, rule.false_alarm_rate, rule.correction)
    return [
        bool(is_real) and (method in P_VALUE_METHODS or value >= threshold)
        for method, value, threshold, is_real in zip(methods, values, thresholds, real, strict=True)
    ]
