"""Candidate against champion on the same held-out rows: the paired difference of a metric, with an interval.

Both models score the identical rows, so what varies between two evaluations is which rows happened to be held
out. A paired bootstrap resamples those rows (or groups of rows, when rows within a group are not independent,
e.g. the flights of one hour share its weather), recomputes both models' metric on each resample, and takes the
percentile interval of the difference and of the relative improvement. Numpy only, vectorised, seeded: the same
inputs give the same interval.

Metrics that are sums over rows (rmse, mae, r2, accuracy, log_loss, f1) are recomputed from per-unit sums
weighted by each resample's counts, a matrix product; roc_auc, which is not, is recomputed per resample. The
resamples are drawn once per decision (:class:`Resampling`) and shared by the metrics, the broken rows and every
slice: drawing them is most of the gate's cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

# Cost bound: a resample of n units costs n; past this many unit-resamples, fewer resamples are drawn.
MAX_UNIT_RESAMPLES = 200_000_000
MIN_RESAMPLES = 200
CHUNK_CELLS = 20_000_000  # resample counts held in memory at once (160 MB of float64)


class MetricComparison(BaseModel):
    """One metric of candidate and champion on the same rows, and their paired difference with its interval.

    Attributes:
        metric: The metric's name.
        greater_is_better: Its direction.
        candidate: The candidate's value on all held-out rows.
        champion: The champion's.
        difference: ``candidate - champion``, in the metric's unit.
        difference_low: Lower end of the interval of the difference.
        difference_high: Upper end.
        improvement: Relative improvement of the candidate (positive: better), ``difference / |champion|``
            signed by the metric's direction.
        improvement_low: Lower end of its interval (the candidate is at least this much better).
        improvement_high: Upper end.
        improvement_se: The bootstrap standard error of the relative improvement.
        confidence: The intervals' level, e.g. 0.95.
        resamples: Bootstrap resamples drawn.
        units: How many units were resampled (rows, or groups).
        unit: ``row`` or the name of the grouping column.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    greater_is_better: bool
    candidate: float
    champion: float
    difference: float
    difference_low: float
    difference_high: float
    improvement: float
    improvement_low: float
    improvement_high: float
    improvement_se: float = 0.0
    confidence: float
    resamples: int
    units: int
    unit: str

    def interval_text(self) -> str:
        """``-2.1 [95% CI -2.6, -1.5]``: the difference and its interval, in the metric's unit."""
        return (
            f"{self.difference:+.3g} [{self.confidence:.0%} CI {self.difference_low:+.3g}, "
            f"{self.difference_high:+.3g}]"
        )


Task = Literal["regression", "binary_classification"]


def _relative(candidate: NDArray[np.float64], champion: NDArray[np.float64], higher: bool) -> NDArray[np.float64]:
    """Relative improvement (positive: better); an exact-zero champion has no scale, so the absolute gain."""
    gain = candidate - champion if higher else champion - candidate
    scale = np.abs(champion)
    return np.where(scale > 0, gain / np.where(scale > 0, scale, 1.0), gain)


def _units(groups: ArrayLike | None, n: int) -> tuple[NDArray[np.int64], int]:
    """The unit of each row (its group's code, or the row itself) and how many units there are."""
    if groups is None:
        return np.arange(n), n
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    return codes.astype(np.int64), int(codes.max()) + 1 if n else 0


def _sums(unit: NDArray[np.int64], units: int, columns: dict[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """Per-unit sums of each column (units by columns)."""
    if units == len(unit) and np.array_equal(unit, np.arange(units)):  # each row its own unit
        return np.stack(list(columns.values()), axis=1)
    return np.stack([np.bincount(unit, weights=values, minlength=units) for values in columns.values()], axis=1)


def _metric_from_sums(name: str, s: dict[str, NDArray[np.float64]], side: str) -> NDArray[np.float64]:
    """A metric from (weighted) sums over rows; ``side`` is ``c`` (candidate) or ``h`` (champion)."""
    n = s["n"]
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "rmse":
            return np.sqrt(s[f"se_{side}"] / n)
        if name == "mae":
            return s[f"ae_{side}"] / n
        if name == "r2":
            total = s["y2"] - s["y"] ** 2 / n
            return 1.0 - s[f"se_{side}"] / total
        if name == "accuracy":
            return s[f"ok_{side}"] / n
        if name == "log_loss":
            return s[f"ll_{side}"] / n
        if name == "f1":
            tp, fp, fn = s[f"tp_{side}"], s[f"fp_{side}"], s[f"fn_{side}"]
            return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    raise ValueError(f"no bootstrap for metric {name!r}")


def _row_columns(
    task: Task, y: NDArray[np.float64], c: NDArray[np.float64], h: NDArray[np.float64]
) -> dict[str, NDArray[np.float64]]:
    """The per-row quantities the decomposable metrics are sums of."""
    columns = {"n": np.ones_like(y)}
    if task == "regression":
        columns |= {"y": y, "y2": y * y, "se_c": (c - y) ** 2, "se_h": (h - y) ** 2}
        columns |= {"ae_c": np.abs(c - y), "ae_h": np.abs(h - y)}
        return columns
    for side, p in (("c", c), ("h", h)):
        clipped = np.clip(p, 1e-15, 1 - 1e-15)
        label = p >= 0.5
        columns[f"ll_{side}"] = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
        columns[f"ok_{side}"] = (label == (y == 1)).astype(float)
        columns[f"tp_{side}"] = (label & (y == 1)).astype(float)
        columns[f"fp_{side}"] = (label & (y == 0)).astype(float)
        columns[f"fn_{side}"] = (~label & (y == 1)).astype(float)
    return columns


def _auc(y: NDArray[np.float64], p: NDArray[np.float64]) -> float:
    """ROC AUC with ties counted half (the Mann-Whitney statistic), NaN with a single class."""
    from scipy.stats import rankdata

    positives = y == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(p)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class Resampling:
    """The bootstrap resamples of one set of held-out rows, drawn once and shared by every figure of a decision.

    Attributes:
        unit_of: Each row's unit (its group's code, or the row itself).
        units: How many units are resampled.
        unit: ``row`` or the grouping column's name.
        counts: How often each unit is drawn in each resample (resamples by units, as small integers).
    """

    unit_of: NDArray[np.int64]
    units: int
    unit: str
    counts: NDArray[np.unsignedinteger]

    @classmethod
    def draw(
        cls, rows: int, *, groups: ArrayLike | None = None, unit: str = "row", resamples: int = 1000, seed: int = 0
    ) -> Resampling:
        """Draw the resamples of ``rows`` rows (or of their ``groups``): ``resamples`` of them, fewer on large
        inputs (at most MAX_UNIT_RESAMPLES unit draws in all, at least MIN_RESAMPLES)."""
        if groups is not None and len(np.asarray(groups)) != rows:
            raise ValueError("targets, both models' predictions and groups must have one value per held-out row")
        unit_of, units = _units(groups, rows)
        draws = max(MIN_RESAMPLES, min(resamples, MAX_UNIT_RESAMPLES // max(units, 1)))
        return cls(
            unit_of=unit_of, units=units, unit=unit, counts=_draw_counts(np.random.default_rng(seed), units, draws)
        )

    @property
    def draws(self) -> int:
        """How many resamples."""
        return len(self.counts)

    def chunks(
        self, units: NDArray[np.int64] | None = None, dtype: type[np.floating] = np.float64
    ) -> Iterator[NDArray[np.floating]]:
        """The counts as float blocks of resamples (of the given units only), each small enough to multiply."""
        width = self.units if units is None else len(units)
        step = max(1, CHUNK_CELLS // max(width, 1))
        for start in range(0, self.draws, step):
            block = self.counts[start : start + step]
            yield (block if units is None else np.take(block, units, axis=1)).astype(dtype)


def _draw_counts(rng: np.random.Generator, units: int, draws: int) -> NDArray[np.unsignedinteger]:
    """How often each unit is drawn in each resample; drawing indices and counting them is faster than
    rng.multinomial. One byte a count: a unit drawn 256 times in one resample (never, past a few hundred units)
    widens the type."""
    counts: NDArray[np.unsignedinteger] = np.empty((draws, units), dtype=np.uint8)
    for row in range(draws):
        drawn = np.bincount(rng.integers(0, units, units), minlength=units)
        if drawn.max(initial=0) > np.iinfo(counts.dtype).max:
            counts = counts.astype(np.uint32)
        counts[row] = drawn
    return counts


def compare(
    metrics: dict[str, bool],
    task: Task,
    y_true: ArrayLike,
    candidate: ArrayLike,
    champion: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    unit: str = "row",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    resampling: Resampling | None = None,
) -> dict[str, MetricComparison]:
    """The paired bootstrap of each metric's difference between candidate and champion.

    Args:
        metrics: Metric name -> whether greater is better.
        task: ``regression`` or ``binary_classification`` (predictions are then P(class 1)).
        y_true: The held-out targets.
        candidate: The candidate's predictions on those rows.
        champion: The champion's predictions on the same rows, in the same order.
        groups: A group per row: groups are resampled whole (None: rows).
        unit: Name of the grouping (for the record).
        resamples: Bootstrap resamples (fewer on very large inputs, at least 200; see MAX_UNIT_RESAMPLES).
        confidence: Level of the percentile intervals.
        seed: Seed of the resampling.
        resampling: Resamples already drawn for these rows (then ``groups``, ``unit``, ``resamples`` and
            ``seed`` are its own).

    Raises:
        ValueError: Inputs of different lengths, no rows, or a metric that cannot be computed on them.
    """
    y = np.asarray(y_true, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    h = np.asarray(champion, dtype=np.float64)
    if not (len(y) == len(c) == len(h)) or (resampling is not None and len(resampling.unit_of) != len(y)):
        raise ValueError("targets, both models' predictions and groups must have one value per held-out row")
    if len(y) == 0:
        raise ValueError("no held-out rows to compare the models on")
    shared = resampling or Resampling.draw(len(y), groups=groups, unit=unit, resamples=resamples, seed=seed)
    unit_of, units, unit, draws = shared.unit_of, shared.units, shared.unit, shared.draws
    grouped = shared.units != len(y) or not np.array_equal(unit_of, np.arange(len(y)))
    tails = ((1 - confidence) / 2, (1 + confidence) / 2)
    decomposable = [m for m in metrics if m != "roc_auc"]
    columns = _row_columns(task, y, c, h)
    per_unit = _sums(unit_of, units, columns)
    full = dict(zip(columns, per_unit.sum(axis=0)[:, None], strict=True))
    rows = [np.flatnonzero(unit_of == u) for u in range(units)] if grouped and "roc_auc" in metrics else None
    boot_sums: list[NDArray[np.float64]] = []
    boot_auc: list[tuple[float, float]] = []
    for counts in shared.chunks():
        if decomposable:
            boot_sums.append(counts @ per_unit)
        for row_counts in counts if "roc_auc" in metrics else ():
            index = np.repeat(np.arange(units), row_counts.astype(np.int64))
            if rows is not None:
                index = np.concatenate([rows[u] for u in index])
            boot_auc.append((_auc(y[index], c[index]), _auc(y[index], h[index])))
    results: dict[str, MetricComparison] = {}
    if decomposable:
        boot = dict(zip(columns, np.concatenate(boot_sums).T, strict=True))
        for name in decomposable:
            point = (_metric_from_sums(name, full, "c")[0], _metric_from_sums(name, full, "h")[0])
            sample = (_metric_from_sums(name, boot, "c"), _metric_from_sums(name, boot, "h"))
            results[name] = _summarise(name, metrics[name], point, sample, tails, confidence, draws, units, unit)
    if "roc_auc" in metrics:
        point = (_auc(y, c), _auc(y, h))
        sample = (np.array([a for a, _ in boot_auc]), np.array([b for _, b in boot_auc]))
        results["roc_auc"] = _summarise(
            "roc_auc", metrics["roc_auc"], point, sample, tails, confidence, draws, units, unit
        )
    return results


def _summarise(
    name: str,
    higher: bool,
    point: tuple[float, float],
    boot: tuple[NDArray[np.float64], NDArray[np.float64]],
    tails: tuple[float, float],
    confidence: float,
    draws: int,
    units: int,
    unit: str,
) -> MetricComparison:
    candidate, champion = float(point[0]), float(point[1])
    if not (math.isfinite(candidate) and math.isfinite(champion)):
        raise ValueError(
            f"{name} cannot be computed on the held-out rows (for roc_auc both classes must be present)"
        )
    difference = boot[0] - boot[1]
    improvement = _relative(boot[0], boot[1], higher)
    finite = np.isfinite(difference) & np.isfinite(improvement)  # a resample with one class has no roc_auc
    if finite.sum() < draws / 2:
        raise ValueError(f"{name} cannot be computed on most resamples of the {units} held-out units")
    diff_low, diff_high = np.quantile(difference[finite], tails)
    imp_low, imp_high = np.quantile(improvement[finite], tails)
    return MetricComparison(
        metric=name,
        greater_is_better=higher,
        candidate=candidate,
        champion=champion,
        difference=candidate - champion,
        difference_low=float(diff_low),
        difference_high=float(diff_high),
        improvement=float(_relative(np.array(candidate), np.array(champion), higher)),
        improvement_low=float(imp_low),
        improvement_high=float(imp_high),
        improvement_se=float(np.std(improvement[finite], ddof=1)),
        confidence=confidence,
        resamples=draws,
        units=units,
        unit=unit,
    )


class Compatibility(BaseModel):
    """Held-out rows the champion got right and the candidate gets wrong (backward compatibility).

    Attributes:
        rate: Share of the held-out rows the candidate breaks.
        rate_low: Lower end of its interval.
        rate_high: Upper end.
        broken: How many rows it breaks.
        rows: How many rows were compared.
        definition: What "broken" means here, e.g. ``absolute error grows by more than 4.1``.
        tolerance: For regression, how much a row's absolute error may grow before it counts as broken.
        confidence: The interval's level.
        units: Units resampled (rows, or groups).
        unit: ``row`` or the grouping column.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: float
    rate_low: float
    rate_high: float
    broken: int
    rows: int
    definition: str
    tolerance: float | None = None
    confidence: float
    units: int
    unit: str

    def text(self) -> str:
        """``2.1% of rows [95% CI 1.6%, 2.7%]`` (as in "breaks 2.1% of rows ...")."""
        return f"{self.rate:.1%} of rows [{self.confidence:.0%} CI {self.rate_low:.1%}, {self.rate_high:.1%}]"


def compatibility(
    task: Task,
    y_true: ArrayLike,
    candidate: ArrayLike,
    champion: ArrayLike,
    *,
    tolerance: float | None = None,
    groups: ArrayLike | None = None,
    unit: str = "row",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    resampling: Resampling | None = None,
) -> Compatibility:
    """The share of rows the candidate breaks, with a bootstrap interval (the same resampling as :func:`compare`).

    A row is broken when the champion got it right and the candidate gets it wrong (classification, labels at
    0.5), or, for regression, when its absolute error grows by more than ``tolerance`` (None: the champion's mean
    absolute error on these rows, i.e. the candidate's miss grows by more than a typical miss).
    """
    y = np.asarray(y_true, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    h = np.asarray(champion, dtype=np.float64)
    if not (len(y) == len(c) == len(h)) or len(y) == 0:
        raise ValueError("compatibility needs the same, non-empty held-out rows for both models")
    if task == "regression":
        champion_error = np.abs(h - y)
        allowed = float(champion_error.mean()) if tolerance is None else float(tolerance)
        broken = np.abs(c - y) > champion_error + allowed
        definition = f"absolute error grows by more than {allowed:.4g}"
    else:
        allowed = None
        truth = y == 1
        broken = ((h >= 0.5) == truth) & ((c >= 0.5) != truth)
        definition = "the champion's label was right and the candidate's is wrong"
    shared = resampling or Resampling.draw(len(y), groups=groups, unit=unit, resamples=resamples, seed=seed)
    if len(shared.unit_of) != len(y):
        raise ValueError("the resampling must be of the same held-out rows")
    units, unit = shared.units, shared.unit
    per_unit = _sums(shared.unit_of, units, {"n": np.ones_like(y), "broken": broken.astype(np.float64)})
    boot = np.concatenate([counts @ per_unit for counts in shared.chunks()])
    low, high = np.quantile(boot[:, 1] / boot[:, 0], ((1 - confidence) / 2, (1 + confidence) / 2))
    return Compatibility(
        rate=float(broken.mean()),
        rate_low=float(low),
        rate_high=float(high),
        broken=int(broken.sum()),
        rows=len(y),
        definition=definition,
        tolerance=allowed,
        confidence=confidence,
        units=units,
        unit=unit,
    )


SliceStatus = Literal["ok", "regressed", "insufficient evidence"]


class SliceComparison(BaseModel):
    """The primary metric on the held-out rows of one slice (``origin = JFK``), candidate against champion.

    Attributes:
        column: The slicing column.
        value: The slice's value in it.
        rows: Held-out rows in the slice.
        candidate: The candidate's metric on them (None: not compared).
        champion: The champion's.
        comparison: The paired bootstrap on the slice's rows (None when the slice is too small).
        p_value: One-sided p-value of "the candidate is worse than the champion by more than the slice margin"
            (normal approximation with the bootstrap's standard error), None when not tested.
        adjusted_p: The p-value Holm-adjusted across every tested slice of every column.
        status: ``ok``, ``regressed`` (significant after Holm's correction) or ``insufficient evidence``.
        note: Why a slice was not tested.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    value: str
    rows: int
    candidate: float | None = None
    champion: float | None = None
    comparison: MetricComparison | None = None
    p_value: float | None = None
    adjusted_p: float | None = None
    status: SliceStatus
    note: str = ""

    @property
    def name(self) -> str:
        """``origin = JFK``."""
        return f"{self.column} = {self.value}"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control across all of them), in input order."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def compare_slices(
    metric: str,
    greater_is_better: bool,
    task: Task,
    y_true: ArrayLike,
    candidate: ArrayLike,
    champion: ArrayLike,
    slices: dict[str, ArrayLike],
    *,
    min_rows: int,
    margin: float,
    alpha: float,
    groups: ArrayLike | None = None,
    unit: str = "row",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    resampling: Resampling | None = None,
) -> list[SliceComparison]:
    """Per slice of each column, the paired difference of the primary metric, tested for a regression.

    A slice regresses when the candidate is worse than the champion by more than ``margin`` (relative) with a
    Holm-adjusted one-sided p-value below ``alpha`` across every tested slice, so that testing many slices does
    not reject good candidates by chance. Slices with fewer than ``min_rows`` rows are not tested and are
    reported as insufficient evidence.
    """
    from scipy.stats import norm

    y = np.asarray(y_true, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    h = np.asarray(champion, dtype=np.float64)
    group_values = None if groups is None else np.asarray(groups)
    # Decomposable metrics reuse the decision's resamples, restricted to each slice's units (a slice's size then
    # varies across resamples, as it would across held-out samples); roc_auc resamples each slice on its own.
    shared = None
    if metric != "roc_auc":
        shared = resampling or Resampling.draw(len(y), groups=groups, unit=unit, resamples=resamples, seed=seed)
        columns = _row_columns(task, y, c, h)
        per_row = np.stack(list(columns.values()), axis=1)
    tails = ((1 - confidence) / 2, (1 + confidence) / 2)
    found: list[dict[str, object]] = []
    for column, values in slices.items():
        labels = np.asarray(values).astype(str)
        if len(labels) != len(y):
            raise ValueError(f"slice column {column!r} must have one value per held-out row")
        for value in np.unique(labels):
            rows = np.flatnonzero(labels == value)
            entry: dict[str, object] = {"column": column, "value": str(value), "rows": len(rows)}
            if len(rows) < min_rows:
                found.append({**entry, "status": "insufficient evidence", "note": f"fewer than {min_rows} rows"})
                continue
            try:
                if shared is not None:
                    units, inverse = np.unique(shared.unit_of[rows], return_inverse=True)
                    per_unit = np.stack(
                        [
                            np.bincount(inverse, weights=per_row[rows, j], minlength=len(units))
                            for j in range(len(columns))
                        ],
                        axis=1,
                    )
                    # Single precision halves the cost; its rounding (~1e-5 of a sum) is far below a slice's CI.
                    single = per_unit.astype(np.float32)
                    sums = np.concatenate([b @ single for b in shared.chunks(units, np.float32)]).astype(
                        np.float64
                    )
                    boot = dict(zip(columns, sums.T, strict=True))
                    full = dict(zip(columns, per_unit.sum(axis=0)[:, None], strict=True))
                    point = (_metric_from_sums(metric, full, "c")[0], _metric_from_sums(metric, full, "h")[0])
                    sample = (_metric_from_sums(metric, boot, "c"), _metric_from_sums(metric, boot, "h"))
                    result = _summarise(
                        metric,
                        greater_is_better,
                        point,
                        sample,
                        tails,
                        confidence,
                        shared.draws,
                        len(units),
                        shared.unit,
                    )
                else:
                    result = compare(
                        {metric: greater_is_better},
                        task,
                        y[rows],
                        c[rows],
                        h[rows],
                        groups=None if group_values is None else group_values[rows],
                        unit=unit,
                        resamples=resamples,
                        confidence=confidence,
                        seed=seed,
                    )[metric]
            except ValueError as error:  # e.g. roc_auc on a slice with one class
                found.append({**entry, "status": "insufficient evidence", "note": str(error)})
                continue
            shift = result.improvement + margin
            if result.improvement_se > 0:
                p_value = float(norm.cdf(shift / result.improvement_se))
            else:
                p_value = 0.0 if shift < 0 else 1.0
            found.append(
                {
                    **entry,
                    "candidate": result.candidate,
                    "champion": result.champion,
                    "comparison": result,
                    "p_value": p_value,
                }
            )
    tested = [entry for entry in found if "p_value" in entry]
    for entry, adjusted in zip(tested, holm([float(e["p_value"]) for e in tested]), strict=True):  # type: ignore[arg-type]
        entry["adjusted_p"] = adjusted
        entry["status"] = "regressed" if adjusted < alpha else "ok"
    return [SliceComparison.model_validate(entry) for entry in found]
