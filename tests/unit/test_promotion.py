"""Unit tests of retrainer.promotion: the gate that decides whether a candidate replaces the champion."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from retrainer.config import ProjectConfig, parse_config
from retrainer.promotion import Decision, Verdict, decide, relative_improvement


@pytest.fixture
def project(synth: SimpleNamespace, tmp_path: Path) -> Callable[..., ProjectConfig]:
    """``project(metric, min_improvement=..., floor=...)``: a synthetic config for that metric."""

    def make(metric: str = "rmse", *, min_improvement: float = 0.0, floor: float | None = None) -> ProjectConfig:
        task = "regression" if metric in {"rmse", "mae", "r2"} else "binary_classification"
        document = synth.config_dict(task=task, metric=metric, min_improvement=min_improvement, floor=floor)
        return parse_config(document, tmp_path)

    return make


# -- first model --------------------------------------------------------------------------------------------
def test_first_model_without_floor_is_promoted(project: Callable[..., ProjectConfig]) -> None:
    decision = decide(project("rmse"), candidate=123.0, champion=None)
    assert decision.promoted and decision.verdict is Verdict.PROMOTE
    assert decision.reason == "first model: rmse 123"
    assert decision.relative_improvement is None and decision.champion is None


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
    decision = decide(project(metric, floor=floor), candidate=candidate, champion=None)
    assert decision.promoted is promoted
    assert decision.floor == floor
    if promoted:
        assert "meets the floor" in decision.reason
    else:
        bound = "at most" if metric == "rmse" else "at least"
        assert f"misses the floor ({bound} {floor:.4g})" in decision.reason


def test_first_model_reason_mentions_a_floor_of_zero(project: Callable[..., ProjectConfig]) -> None:
    decision = decide(project("r2", floor=0.0), candidate=0.4, champion=None)
    assert decision.promoted
    assert "floor" in decision.reason


# -- candidate against champion -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("metric", "candidate", "champion", "promoted"),
    [
        ("rmse", 8.0, 10.0, True),  # 20 % lower error
        ("rmse", 9.5, 10.0, False),  # 5 % is short of 10 %
        ("rmse", 12.0, 10.0, False),  # worse
        ("roc_auc", 0.92, 0.8, True),  # 15 % higher
        ("roc_auc", 0.82, 0.8, False),  # 2.5 % is short of 10 %
        ("roc_auc", 0.7, 0.8, False),  # worse
    ],
)
def test_candidate_needs_the_relative_margin_in_the_metric_direction(
    project: Callable[..., ProjectConfig], metric: str, candidate: float, champion: float, promoted: bool
) -> None:
    decision = decide(project(metric, min_improvement=0.1), candidate, champion, champion_version="3")
    assert decision.promoted is promoted
    expected_gain = (candidate - champion if metric == "roc_auc" else champion - candidate) / champion
    assert decision.relative_improvement == pytest.approx(expected_gain)
    assert "champion v3" in decision.reason
    assert ("beats the required" if promoted else "is short of the required") in decision.reason


@pytest.mark.parametrize(("metric", "candidate", "champion"), [("rmse", 0.75, 1.0), ("roc_auc", 0.625, 0.5)])
def test_improvement_exactly_at_the_margin_is_promoted(
    project: Callable[..., ProjectConfig], metric: str, candidate: float, champion: float
) -> None:
    # Binary fractions: the relative improvement is exactly 0.25.
    decision = decide(project(metric, min_improvement=0.25), candidate, champion, "1")
    assert decision.relative_improvement == 0.25
    assert decision.promoted


def test_improvement_of_exactly_one_percent_in_decimal_is_promoted(project: Callable[..., ProjectConfig]) -> None:
    decision = decide(project("rmse", min_improvement=0.01), candidate=9.9, champion=10.0, champion_version="1")
    assert decision.promoted


@pytest.mark.parametrize("metric", ["rmse", "roc_auc"])
@pytest.mark.parametrize("margin", [0.0, 0.01])
def test_equal_scores_are_rejected_even_without_margin(
    project: Callable[..., ProjectConfig], metric: str, margin: float
) -> None:
    decision = decide(project(metric, min_improvement=margin), 0.8, 0.8, "2")
    assert not decision.promoted
    assert decision.relative_improvement == 0.0


def test_any_strict_improvement_passes_a_zero_margin(project: Callable[..., ProjectConfig]) -> None:
    assert decide(project("rmse"), 9.999, 10.0, "1").promoted


@pytest.mark.parametrize(
    ("metric", "candidate", "promoted"), [("rmse", 0.0, False), ("rmse", 0.1, False), ("r2", 0.3, True)]
)
def test_champion_scoring_zero_gives_a_finite_absolute_gain(
    project: Callable[..., ProjectConfig], metric: str, candidate: float, promoted: bool
) -> None:
    decision = decide(project(metric, min_improvement=0.01), candidate, 0.0, "1")
    assert math.isfinite(decision.relative_improvement)
    assert decision.promoted is promoted
    json.dumps(decision.to_dict(), allow_nan=False)


def test_negative_champion_score_still_rewards_a_better_candidate(project: Callable[..., ProjectConfig]) -> None:
    decision = decide(project("r2", min_improvement=0.1), candidate=-0.25, champion=-0.5, champion_version="1")
    assert decision.relative_improvement == pytest.approx(0.5)
    assert decision.promoted


@pytest.mark.parametrize(
    ("candidate", "champion", "label"),
    [
        (math.nan, 1.0, "candidate"),
        (math.inf, None, "candidate"),
        (1.0, math.nan, "champion"),
        (1.0, -math.inf, "champion"),
    ],
)
def test_non_finite_scores_raise(
    project: Callable[..., ProjectConfig], candidate: float, champion: float | None, label: str
) -> None:
    with pytest.raises(ValueError, match=f"{label} rmse is not a finite number"):
        decide(project("rmse"), candidate, champion, "1")


def test_relative_improvement_sign_follows_the_direction() -> None:
    assert relative_improvement(8.0, 10.0, greater_is_better=False) == pytest.approx(0.2)
    assert relative_improvement(12.0, 10.0, greater_is_better=False) == pytest.approx(-0.2)
    assert relative_improvement(0.9, 0.6, greater_is_better=True) == pytest.approx(0.5)
    assert relative_improvement(0.5, 0.0, greater_is_better=True) == 0.5


# -- the decision record ------------------------------------------------------------------------------------
@pytest.mark.parametrize("champion", [None, 10.0])
def test_decision_to_dict_is_strict_json(project: Callable[..., ProjectConfig], champion: float | None) -> None:
    decision = decide(
        project("rmse", min_improvement=0.01, floor=40.0), 9.0, champion, None if champion is None else "4"
    )
    data = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert data["verdict"] in {"promoted", "rejected"}
    assert data["metric"] == "rmse" and data["greater_is_better"] is False
    assert data["candidate"] == 9.0 and data["champion"] == champion
    assert data["min_improvement"] == 0.01 and data["floor"] == 40.0
    assert set(data) == {f for f in Decision.__dataclass_fields__}


def test_decision_carries_the_champion_version(project: Callable[..., ProjectConfig]) -> None:
    decision = decide(project("mae"), 1.0, 2.0, champion_version="7")
    assert decision.champion_version == "7"
    assert decision.to_dict()["verdict"] == "promoted"
