"""Unit tests of retrainer.promotion: the gate that decides whether a candidate replaces the champion.

The gate gets the paired comparison of the two models (the difference with its interval); here the comparisons
are written out, so every case states exactly what the held-out rows showed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer.comparison import Compatibility, MetricComparison, SliceComparison
from retrainer.config import METRICS, ProjectConfig, parse_config
from retrainer.promotion import Decision, Verdict, decide, relative_improvement


@pytest.fixture
def project(synth: SimpleNamespace, tmp_path: Path) -> Callable[..., ProjectConfig]:
    """``project(metric, **promotion)``: a synthetic config for that metric and promotion section."""

    def make(metric: str = "rmse", **promotion: Any) -> ProjectConfig:
        task = "regression" if metric in {"rmse", "mae", "r2"} else "binary_classification"
        document = synth.config_dict(task=task, metric=metric)
        document["promotion"] = promotion
        return parse_config(document, tmp_path)

    return make


def compared(
    metric: str,
    candidate: float,
    champion: float,
    improvement: tuple[float, float, float],
    confidence: float = 0.95,
) -> dict[str, MetricComparison]:
    """What the bootstrap would have found: point and interval of the relative improvement (positive: better)."""
    higher = METRICS[metric][1]
    point, low, high = improvement
    sign = 1 if higher else -1
    scale = abs(champion) or 1.0
    return {
        metric: MetricComparison(
            metric=metric,
            greater_is_better=higher,
            candidate=candidate,
            champion=champion,
            difference=candidate - champion,
            difference_low=min(sign * low * scale, sign * high * scale),
            difference_high=max(sign * low * scale, sign * high * scale),
            improvement=point,
            improvement_low=low,
            improvement_high=high,
            confidence=confidence,
            resamples=1000,
            units=1200,
            unit="row",
        )
    }


# -- first model --------------------------------------------------------------------------------------------
def test_first_model_without_floor_is_promoted(project: Callable[..., ProjectConfig]) -> None:
    decision = decide(project("rmse"), {"rmse": 123.0})
    assert decision.promoted and decision.verdict is Verdict.PROMOTE
    assert decision.reason == "first model: rmse 123"
    assert decision.relative_improvement is None and decision.champion is None and decision.comparison is None


@pytest.mark.parametrize(
    ("metric", "floor", "candidate", "promoted"),
    [
        ("rmse", 40.0, 39.0, True),  # minimise: at most the floor
        ("rmse", 40.0, 40.0, True),  # exactly at the floor is good enough
        ("rmse", 40.0, 41.0, False),
        ("roc_auc", 0.7, 0.75, True),  # maximise: at least the floor
        ("roc_auc", 0.7, 0.7, True),
        ("roc_auc", 0.7, 0.65, False),
    ],
)
def test_first_model_must_meet_the_floor_in_the_metric_direction(
    project: Callable[..., ProjectConfig], metric: str, floor: float, candidate: float, promoted: bool
) -> None:
    decision = decide(project(metric, floor=floor), {metric: candidate})
    assert decision.promoted is promoted
    assert decision.floor == floor
    if promoted:
        assert "meets the floor" in decision.reason
    else:
        bound = "at most" if metric == "rmse" else "at least"
        assert f"misses the floor ({bound} {floor:.4g})" in decision.reason


def test_a_champion_that_cannot_be_loaded_leaves_the_candidate_judged_on_the_floor_saying_why(
    project: Callable[..., ProjectConfig],
) -> None:
    config = project("rmse", floor=40.0)
    problem = "models:/m/3 changed since it was trained (sha256 ab…, recorded cd…)"
    good = decide(config, {"rmse": 39.0}, None, "3", champion_problem=problem)
    assert good.promoted and good.champion_version == "3" and good.champion is None
    assert good.reason == (
        f"champion v3 cannot be loaded ({problem}), so the candidate is judged on the floors only: "
        "replacement: rmse 39 meets the floor 40"
    )
    bad = decide(config, {"rmse": 41.0}, None, "3", champion_problem=problem)
    assert not bad.promoted
    assert bad.reason.endswith("judged on the floors only: rmse 41 misses the floor (at most 40)")


def test_a_first_model_must_meet_the_secondary_floors_too(project: Callable[..., ProjectConfig]) -> None:
    config = project("rmse", secondary={"mae": {"floor": 10.0}, "r2": {"floor": 0.5}})
    good = decide(config, {"rmse": 12.0, "mae": 9.0, "r2": 0.7})
    assert good.promoted and "mae 9 meets its floor 10" in good.reason
    bad = decide(config, {"rmse": 12.0, "mae": 9.0, "r2": 0.4})
    assert not bad.promoted and "r2 0.4 misses its floor (at least 0.5)" in bad.reason
    [mae, r2] = bad.secondary
    assert mae.passed and not r2.passed


# -- superiority: the interval's lower bound must reach the required improvement -----------------------------
def test_superiority_promotes_when_the_lower_bound_clears_the_requirement(
    project: Callable[..., ProjectConfig],
) -> None:
    config = project("rmse", min_improvement=0.01)
    comparisons = compared("rmse", 19.6, 21.7, (0.097, 0.069, 0.120))
    decision = decide(config, {"rmse": 19.6}, {"rmse": 21.7}, "1", comparisons)
    assert decision.promoted
    assert decision.reason == (
        "rmse 19.6 vs 21.7 of v1: -2.1 [95% CI -2.6, -1.5], an improvement of +9.7% [95% CI +6.9%, +12.0%] "
        "clears the required 1.0%"
    )
    assert decision.comparison == comparisons["rmse"] and decision.relative_improvement == pytest.approx(0.097)


@pytest.mark.parametrize(
    ("improvement", "promoted"),
    [
        ((0.05, 0.011, 0.09), True),
        ((0.05, 0.009, 0.09), False),  # better on the point estimate, but not shown to be 1% better
        ((0.004, -0.012, 0.02), False),  # noise: the interval includes no improvement
        ((-0.03, -0.05, -0.01), False),  # worse
    ],
)
def test_superiority_decides_on_the_lower_bound_not_the_point_estimate(
    project: Callable[..., ProjectConfig], improvement: tuple[float, float, float], promoted: bool
) -> None:
    comparisons = compared("roc_auc", 0.84, 0.8, improvement)
    decision = decide(
        project("roc_auc", min_improvement=0.01), {"roc_auc": 0.84}, {"roc_auc": 0.8}, "2", comparisons
    )
    assert decision.promoted is promoted
    assert ("clears" if promoted else "does not clear") in decision.reason


def test_superiority_without_margin_still_needs_a_lower_bound_above_zero(
    project: Callable[..., ProjectConfig],
) -> None:
    config = project("rmse")  # min_improvement 0
    tie = compared("rmse", 10.0, 10.0, (0.0, 0.0, 0.0))
    assert not decide(config, {"rmse": 10.0}, {"rmse": 10.0}, "1", tie).promoted
    shown = compared("rmse", 9.9, 10.0, (0.01, 0.001, 0.02))
    assert decide(config, {"rmse": 9.9}, {"rmse": 10.0}, "1", shown).promoted


# -- non-inferiority: promote the fresher model unless it may be worse by more than the margin ---------------
@pytest.mark.parametrize(
    ("improvement", "promoted", "says"),
    [
        ((0.0, -0.015, 0.015), True, "is within the allowed 2.0% loss"),
        ((-0.005, -0.019, 0.01), True, "is within the allowed 2.0% loss"),
        ((-0.01, -0.03, 0.01), False, "may be worse by more than the allowed 2.0%"),
    ],
)
def test_non_inferiority_allows_a_bounded_loss(
    project: Callable[..., ProjectConfig], improvement: tuple[float, float, float], promoted: bool, says: str
) -> None:
    config = project("rmse", rule="non_inferiority", margin=0.02)
    comparisons = compared("rmse", 10.0, 10.0, improvement)
    decision = decide(config, {"rmse": 10.0}, {"rmse": 10.0}, "3", comparisons)
    assert decision.promoted is promoted and says in decision.reason
    assert decision.rule == "non_inferiority" and decision.margin == 0.02


# -- floors and secondary change thresholds, for every candidate ----------------------------------------------
def test_a_candidate_beyond_the_floor_is_rejected_even_when_better(project: Callable[..., ProjectConfig]) -> None:
    comparisons = compared("rmse", 45.0, 50.0, (0.1, 0.08, 0.12))
    decision = decide(project("rmse", floor=40.0), {"rmse": 45.0}, {"rmse": 50.0}, "1", comparisons)
    assert not decision.promoted
    assert "clears the required 0.0%; but rmse 45 misses the floor (at most 40)" in decision.reason


@pytest.mark.parametrize(
    ("mae", "promoted", "says"),
    [
        (4.95, True, "mae 4.95 vs 5 (+1.0%)"),
        (5.09, True, "mae 5.09 vs 5 (-1.8%)"),  # worse, but within the allowed 2%
        (5.2, False, "mae 5.2 vs 5 (-4.0%) is worse than the allowed 2.0%"),
    ],
)
def test_a_secondary_metric_may_not_get_worse_than_allowed(
    project: Callable[..., ProjectConfig], mae: float, promoted: bool, says: str
) -> None:
    config = project("rmse", secondary={"mae": {"max_degradation": 0.02}})
    comparisons = compared("rmse", 9.0, 10.0, (0.1, 0.05, 0.15))
    decision = decide(config, {"rmse": 9.0, "mae": mae}, {"rmse": 10.0, "mae": 5.0}, "1", comparisons)
    assert decision.promoted is promoted
    [check] = decision.secondary
    assert check.passed is promoted and says in check.note
    if not promoted:
        assert decision.reason.endswith(f"; but {says}")


def test_a_secondary_metric_that_must_improve(project: Callable[..., ProjectConfig]) -> None:
    config = project("rmse", secondary={"r2": {"must_improve": True}})
    comparisons = compared("rmse", 9.0, 10.0, (0.1, 0.05, 0.15))
    assert decide(config, {"rmse": 9.0, "r2": 0.81}, {"rmse": 10.0, "r2": 0.8}, "1", comparisons).promoted
    decision = decide(config, {"rmse": 9.0, "r2": 0.8}, {"rmse": 10.0, "r2": 0.8}, "1", comparisons)
    assert not decision.promoted and "r2 0.8 vs 0.8 (+0.0%) must improve" in decision.reason


def test_a_secondary_metric_that_cannot_be_computed_rejects(project: Callable[..., ProjectConfig]) -> None:
    config = project("log_loss", secondary={"roc_auc": {"floor": 0.6}})
    decision = decide(config, {"log_loss": 0.3})  # one class only: no roc_auc
    assert not decision.promoted and "roc_auc cannot be computed" in decision.reason


# -- errors and records --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("candidate", "champion", "label"),
    [(math.nan, 1.0, "candidate"), (math.inf, None, "candidate"), (1.0, math.nan, "champion")],
)
def test_non_finite_scores_raise(
    project: Callable[..., ProjectConfig], candidate: float, champion: float | None, label: str
) -> None:
    with pytest.raises(ValueError, match=f"{label} rmse is not a finite number"):
        decide(project("rmse"), {"rmse": candidate}, None if champion is None else {"rmse": champion}, "1")


def test_a_champion_without_a_comparison_is_an_error(project: Callable[..., ProjectConfig]) -> None:
    with pytest.raises(ValueError, match="no paired comparison of rmse with champion v4"):
        decide(project("rmse"), {"rmse": 9.0}, {"rmse": 10.0}, "4")


def test_relative_improvement_sign_follows_the_direction() -> None:
    assert relative_improvement(8.0, 10.0, greater_is_better=False) == pytest.approx(0.2)
    assert relative_improvement(12.0, 10.0, greater_is_better=False) == pytest.approx(-0.2)
    assert relative_improvement(0.9, 0.6, greater_is_better=True) == pytest.approx(0.5)
    assert relative_improvement(0.5, 0.0, greater_is_better=True) == 0.5


@pytest.mark.parametrize("champion", [None, 10.0])
def test_decision_to_dict_is_strict_json(project: Callable[..., ProjectConfig], champion: float | None) -> None:
    config = project("rmse", min_improvement=0.01, floor=40.0, secondary={"mae": {"max_degradation": 0.1}})
    comparisons = None if champion is None else compared("rmse", 9.0, champion, (0.1, 0.05, 0.15))
    decision = decide(
        config,
        {"rmse": 9.0, "mae": 4.0},
        None if champion is None else {"rmse": champion, "mae": 4.1},
        None if champion is None else "4",
        comparisons,
    )
    data = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert data["verdict"] == "promoted"
    assert data["metric"] == "rmse" and data["greater_is_better"] is False
    assert data["candidate"] == 9.0 and data["champion"] == champion
    assert data["min_improvement"] == 0.01 and data["floor"] == 40.0 and data["rule"] == "superiority"
    assert (data["comparison"] is None) is (champion is None)
    assert Decision.model_validate(data) == decision


# -- compatibility and slices --------------------------------------------------------------------------------
def _broken(rate: float) -> Compatibility:
    return Compatibility(
        rate=rate,
        rate_low=rate * 0.8,
        rate_high=rate * 1.2,
        broken=int(rate * 1000),
        rows=1000,
        definition="absolute error grows by more than 4",
        tolerance=4.0,
        confidence=0.95,
        units=1000,
        unit="row",
    )


def _slice(value: str, status: str, improvement: tuple[float, float, float] | None = None) -> SliceComparison:
    if improvement is None:
        return SliceComparison(column="origin", value=value, rows=40, status=status, note="fewer than 200 rows")
    [comparison] = compared("rmse", 25.0, 20.0, improvement).values()
    p = 0.001 if status == "regressed" else 0.6
    return SliceComparison(
        column="origin",
        value=value,
        rows=800,
        candidate=25.0,
        champion=20.0,
        comparison=comparison,
        p_value=p / 3,
        adjusted_p=p,
        status=status,
    )


def test_the_broken_rows_are_in_every_reason_and_reject_above_the_ceiling(
    project: Callable[..., ProjectConfig],
) -> None:
    comparisons = compared("rmse", 19.6, 21.7, (0.097, 0.069, 0.120))
    config = project("rmse", compatibility={"max_broken": 0.05})
    within = decide(config, {"rmse": 19.6}, {"rmse": 21.7}, "1", comparisons, compatibility=_broken(0.03))
    assert within.promoted and within.reason.endswith("; breaks 3.0% of rows [95% CI 2.4%, 3.6%]")
    assert within.compatibility == _broken(0.03)
    above = decide(config, {"rmse": 19.6}, {"rmse": 21.7}, "1", comparisons, compatibility=_broken(0.08))
    assert not above.promoted
    assert "; but breaks 8.0% of rows [95% CI 6.4%, 9.6%], above the allowed 5.0%" in above.reason
    unbounded = decide(
        project("rmse"), {"rmse": 19.6}, {"rmse": 21.7}, "1", comparisons, compatibility=_broken(0.5)
    )
    assert unbounded.promoted, "without a ceiling the broken rows are recorded, not gated"


def test_a_regressed_slice_rejects_a_candidate_that_is_better_overall_and_is_named(
    project: Callable[..., ProjectConfig],
) -> None:
    config = project("rmse", slices={"columns": ["region"], "margin": 0.05})
    comparisons = compared("rmse", 19.6, 21.7, (0.097, 0.069, 0.120))
    slices = [_slice("JFK", "regressed", (-0.25, -0.31, -0.19)), _slice("LGA", "ok", (0.1, 0.05, 0.15))]
    decision = decide(config, {"rmse": 19.6}, {"rmse": 21.7}, "1", comparisons, slices=slices)
    assert not decision.promoted
    assert (
        "; but slice origin = JFK regresses: rmse 25 vs 20, -25.0% [95% CI -31.0%, -19.0%], beyond the allowed "
        "5.0% (Holm p=0.001)" in decision.reason
    )
    assert decision.slices == slices


def test_slices_without_a_regression_are_counted_with_those_lacking_evidence(
    project: Callable[..., ProjectConfig],
) -> None:
    config = project("rmse", slices={"columns": ["region"]})
    comparisons = compared("rmse", 19.6, 21.7, (0.097, 0.069, 0.120))
    slices = [_slice("LGA", "ok", (0.1, 0.05, 0.15)), _slice("ISP", "insufficient evidence")]
    decision = decide(config, {"rmse": 19.6}, {"rmse": 21.7}, "1", comparisons, slices=slices)
    assert decision.promoted
    assert decision.reason.endswith("; slices: 1 without a significant regression, 1 with insufficient evidence")
