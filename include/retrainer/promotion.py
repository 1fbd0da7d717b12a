"""The promotion gate: a candidate replaces the champion only if the held-out rows show it is better.

Both models are scored on the same held-out rows before this is called, and the paired bootstrap of those rows
(:mod:`retrainer.comparison`) gives an interval of the candidate's relative improvement on the primary metric.
The gate is a pure function of those numbers and the project's promotion rule, so every decision can be
re-derived from what was recorded:

- ``superiority``: promote only if the interval's lower bound reaches ``min_improvement`` (and is above zero):
  a candidate that is better by noise alone is not promoted;
- ``non_inferiority``: promote the fresher model unless it may be worse than the champion by more than
  ``margin`` (the interval's lower bound is below ``-margin``);
- floors (absolute bounds) on the primary metric and on secondary metrics, for every candidate, the first one
  included; change thresholds on secondary metrics (``max_degradation``, ``must_improve``) on their point
  estimates, as TFX has them;
- compatibility: the share of held-out rows the candidate breaks (the champion got them right), recorded on every
  decision and rejected above ``compatibility.max_broken``;
- slices: per slice of the configured columns, the paired difference of the primary metric; a slice that is
  worse by more than ``slices.margin`` with a Holm-adjusted significance below ``slices.alpha`` rejects the
  candidate, naming the slice; small slices are reported as insufficient evidence.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from retrainer.comparison import Compatibility, MetricComparison, SliceComparison
from retrainer.config import METRICS

if TYPE_CHECKING:
    from retrainer.config import MetricThreshold, ProjectConfig


class Verdict(StrEnum):
    """Outcome of the gate."""

    PROMOTE = "promoted"
    REJECT = "rejected"


class SecondaryCheck(BaseModel):
    """One secondary metric's thresholds, checked.

    Attributes:
        metric: The metric.
        candidate: The candidate's value.
        champion: The champion's value (None without a champion).
        passed: Whether every threshold of the metric holds.
        note: What was checked, e.g. ``mae 5.1 vs 4.9 (4.1% worse, at most 2.0% allowed)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    candidate: float | None
    champion: float | None
    passed: bool
    note: str


class Decision(BaseModel):
    """A promotion decision and why it was made.

    Attributes:
        verdict: ``promoted`` or ``rejected``.
        reason: One line, e.g. ``rmse 19.6 vs 21.7 of v1: -2.1 [95% CI -2.6, -1.5], an improvement of +9.7%
            [95% CI +6.9%, +12.0%] clears the required 1.0%``.
        metric: The primary metric.
        greater_is_better: Its direction.
        candidate: The candidate's score.
        champion: The champion's score on the same rows (None for a first model).
        champion_version: The champion it was compared with.
        relative_improvement: The candidate's relative improvement (point estimate; positive: better).
        rule: ``superiority`` or ``non_inferiority``.
        min_improvement: The improvement superiority requires.
        margin: The loss non-inferiority allows.
        floor: The primary metric's absolute bound.
        comparison: The primary metric's paired comparison with its intervals (None for a first model).
        secondary: Each secondary metric's checks.
        compatibility: The rows the candidate breaks, with the interval (None without a champion).
        slices: Each slice's comparison and status (empty without a champion or slice columns).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict
    reason: str
    metric: str
    greater_is_better: bool
    candidate: float
    champion: float | None
    champion_version: str | None
    relative_improvement: float | None
    rule: str = "superiority"
    min_improvement: float = 0.0
    margin: float = 0.0
    floor: float | None = None
    comparison: MetricComparison | None = None
    secondary: list[SecondaryCheck] = Field(default_factory=list)
    compatibility: Compatibility | None = None
    slices: list[SliceComparison] = Field(default_factory=list)

    @property
    def promoted(self) -> bool:
        """Whether the candidate becomes the champion."""
        return self.verdict is Verdict.PROMOTE

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the decision artifact)."""
        return self.model_dump(mode="json")


def relative_improvement(candidate: float, champion: float, greater_is_better: bool) -> float:
    """How much better the candidate is, relative to the champion's score (positive = better).

    A champion scoring exactly 0 has no scale: the absolute gain is returned (it must stay finite for JSON).
    """
    gain = candidate - champion if greater_is_better else champion - candidate
    return gain / abs(champion) if champion != 0 else gain


def _misses_floor(value: float, floor: float, greater_is_better: bool) -> bool:
    return value < floor if greater_is_better else value > floor


def _bound(greater_is_better: bool) -> str:
    return "at least" if greater_is_better else "at most"


def _check_secondary(
    name: str, threshold: MetricThreshold, candidate: dict[str, float], champion: dict[str, float] | None
) -> SecondaryCheck:
    """The thresholds of one secondary metric (floor, change thresholds against the champion)."""
    higher = METRICS[name][1]
    value = candidate.get(name)
    before = None if champion is None else champion.get(name)
    if value is None:
        return SecondaryCheck(
            metric=name, candidate=None, champion=before, passed=False, note=f"{name} cannot be computed"
        )
    problems, facts = [], []
    if threshold.floor is not None:
        if _misses_floor(value, threshold.floor, higher):
            problems.append(f"{name} {value:.4g} misses its floor ({_bound(higher)} {threshold.floor:.4g})")
        else:
            facts.append(f"{name} {value:.4g} meets its floor {threshold.floor:.4g}")
    if before is not None and (threshold.max_degradation is not None or threshold.must_improve):
        gain = relative_improvement(value, before, higher)
        change = f"{name} {value:.4g} vs {before:.4g} ({gain:+.1%})"
        if threshold.must_improve and gain <= 0:
            problems.append(f"{change} must improve")
        elif threshold.max_degradation is not None and -gain > threshold.max_degradation + 1e-12:
            problems.append(f"{change} is worse than the allowed {threshold.max_degradation:.1%}")
        else:
            facts.append(change)
    return SecondaryCheck(
        metric=name, candidate=value, champion=before, passed=not problems, note="; ".join(problems or facts)
    )


def decide(
    config: ProjectConfig,
    candidate_metrics: dict[str, float],
    champion_metrics: dict[str, float] | None = None,
    champion_version: str | None = None,
    comparisons: dict[str, MetricComparison] | None = None,
    *,
    compatibility: Compatibility | None = None,
    slices: list[SliceComparison] | None = None,
    champion_problem: str | None = None,
) -> Decision:
    """Apply the project's promotion rule.

    Args:
        config: The project (primary metric, its direction, the rule, floors and thresholds).
        candidate_metrics: The candidate's metrics on the held-out rows.
        champion_metrics: The champion's on the same rows, None without a champion.
        champion_version: The champion's registry version, recorded in the decision.
        comparisons: The paired comparisons of the metrics (at least the primary one when there is a champion).
        compatibility: The rows the candidate breaks (with a champion).
        slices: The per-slice comparisons (with a champion and slice columns).
        champion_problem: Why the champion ``champion_version`` could not be scored (it cannot be loaded):
            the candidate is then judged as a first model would be, on the floors only, and the reason says so.

    Raises:
        ValueError: The primary score is missing or not finite, or the primary comparison is missing.
    """
    metric = config.metric.name
    higher = config.metric.greater_is_better
    rule = config.promotion
    candidate = candidate_metrics.get(metric)
    champion = None if champion_metrics is None else champion_metrics.get(metric)
    for label, value in (("candidate", candidate), ("champion", champion)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{label} {metric} is not a finite number: {value}")
    if candidate is None:
        raise ValueError(f"the candidate's {metric} is missing")
    checks = [_check_secondary(n, t, candidate_metrics, champion_metrics) for n, t in rule.secondary.items()]
    common: dict[str, Any] = {
        "metric": metric,
        "greater_is_better": higher,
        "candidate": candidate,
        "champion": champion,
        "champion_version": champion_version,
        "rule": rule.rule,
        "min_improvement": rule.min_improvement,
        "margin": rule.margin,
        "floor": rule.floor,
        "secondary": checks,
    }
    problems = [c.note for c in checks if not c.passed]
    if rule.floor is not None and _misses_floor(candidate, rule.floor, higher):
        problems.insert(0, f"{metric} {candidate:.4g} misses the floor ({_bound(higher)} {rule.floor:.4g})")

    if champion is None:
        start = (
            f"champion v{champion_version} cannot be loaded ({champion_problem}), so the candidate is judged on "
            "the floors only: "
            if champion_problem
            else ""
        )
        if problems:
            reason = start + ("" if start else "no champion yet and ") + "; ".join(problems)
            return Decision(verdict=Verdict.REJECT, reason=reason, relative_improvement=None, **common)
        reason = (
            start
            + f"{'replacement' if start else 'first model'}: {metric} {candidate:.4g}"
            + (f" meets the floor {rule.floor:.4g}" if rule.floor is not None else "")
        )
        met = [c.note for c in checks if c.note]
        return Decision(
            verdict=Verdict.PROMOTE, reason="; ".join([reason, *met]), relative_improvement=None, **common
        )

    comparison = (comparisons or {}).get(metric)
    if comparison is None:
        raise ValueError(f"no paired comparison of {metric} with champion v{champion_version}")
    head = f"{metric} {candidate:.4g} vs {champion:.4g} of v{champion_version}: {comparison.interval_text()}, "
    level = f"{comparison.confidence:.0%} CI"
    change = (
        f"an improvement of {comparison.improvement:+.1%} [{level} {comparison.improvement_low:+.1%}, "
        f"{comparison.improvement_high:+.1%}]"
    )
    low = comparison.improvement_low
    if rule.rule == "superiority":
        passed = low > 0 and low >= rule.min_improvement - 1e-9
        verdict_text = (
            f"clears the required {rule.min_improvement:.1%}"
            if passed
            else f"does not clear the required {rule.min_improvement:.1%}"
        )
    else:
        passed = low >= -rule.margin - 1e-9
        verdict_text = (
            f"is within the allowed {rule.margin:.1%} loss"
            if passed
            else f"may be worse by more than the allowed {rule.margin:.1%}"
        )
    reason = head + f"{change} {verdict_text}"
    slices = slices or []
    for check in slices:
        if check.status == "regressed" and check.comparison is not None:
            c = check.comparison
            problems.append(
                f"slice {check.name} regresses: {metric} {c.candidate:.4g} vs {c.champion:.4g}, "
                f"{c.improvement:+.1%} [{level} {c.improvement_low:+.1%}, {c.improvement_high:+.1%}], "
                f"beyond the allowed {rule.slices.margin:.1%} (Holm p={check.adjusted_p:.2g})"
            )
    if compatibility is not None:
        if rule.compatibility.max_broken is not None and compatibility.rate > rule.compatibility.max_broken:
            problems.append(
                f"breaks {compatibility.text()}, above the allowed {rule.compatibility.max_broken:.1%}"
            )
        else:
            reason += f"; breaks {compatibility.text()}"
    if slices and not any(check.status == "regressed" for check in slices):
        counts = {s: sum(check.status == s for check in slices) for s in ("ok", "insufficient evidence")}
        reason += f"; slices: {counts['ok']} without a significant regression" + (
            f", {counts['insufficient evidence']} with insufficient evidence"
            if counts["insufficient evidence"]
            else ""
        )
    if problems:  # a floor or a secondary threshold also rejects
        reason += ("; but " if passed else "; also ") + "; ".join(problems)
    verdict = Verdict.PROMOTE if passed and not problems else Verdict.REJECT
    return Decision(
        verdict=verdict,
        reason=reason,
        relative_improvement=comparison.improvement,
        comparison=comparison,
        compatibility=compatibility,
        slices=slices,
        **common,
    )
