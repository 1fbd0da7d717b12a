"""The paired bootstrap: both models on the same rows, the difference of a metric with its interval."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from retrainer import comparison
from retrainer.comparison import compare


def _regression(n: int, seed: int, candidate_noise: float, champion_noise: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 10, n)
    return y, y + rng.normal(0, candidate_noise, n), y + rng.normal(0, champion_noise, n)


def test_point_values_are_the_metrics_of_all_held_out_rows() -> None:
    y, c, h = _regression(3000, 1, 4.0, 5.0)
    result = compare({"rmse": False, "mae": False, "r2": True}, "regression", y, c, h, seed=3)
    assert result["rmse"].candidate == pytest.approx(np.sqrt(sk.mean_squared_error(y, c)))
    assert result["mae"].champion == pytest.approx(sk.mean_absolute_error(y, h))
    assert result["r2"].candidate == pytest.approx(sk.r2_score(y, c))
    rmse = result["rmse"]
    assert rmse.difference == pytest.approx(rmse.candidate - rmse.champion)
    assert rmse.improvement == pytest.approx((rmse.champion - rmse.candidate) / rmse.champion)
    assert rmse.difference_low < rmse.difference < rmse.difference_high < 0  # clearly better: lower error
    assert 0 < rmse.improvement_low < rmse.improvement < rmse.improvement_high
    assert rmse.resamples == 1000 and rmse.units == 3000 and rmse.unit == "row" and rmse.confidence == 0.95


def test_classification_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(2000) < 0.3).astype(float)
    c = np.clip(0.35 * y + rng.random(2000) * 0.7, 0, 1)
    h = np.clip(0.25 * y + rng.random(2000) * 0.7, 0, 1)
    names = {"roc_auc": True, "log_loss": False, "accuracy": True, "f1": True}
    result = compare(names, "binary_classification", y, c, h, resamples=300)
    assert result["roc_auc"].candidate == pytest.approx(sk.roc_auc_score(y, c))
    assert result["log_loss"].champion == pytest.approx(sk.log_loss(y, h))
    assert result["accuracy"].candidate == pytest.approx(sk.accuracy_score(y, c >= 0.5))
    assert result["f1"].champion == pytest.approx(sk.f1_score(y, h >= 0.5))
    assert result["roc_auc"].improvement_low > 0  # the candidate separates the classes better


def test_identical_models_differ_by_exactly_nothing() -> None:
    y, c, _ = _regression(500, 4, 3.0, 3.0)
    result = compare({"rmse": False}, "regression", y, c, c)["rmse"]
    assert result.difference == result.difference_low == result.difference_high == 0.0
    assert result.improvement_low == result.improvement_high == 0.0


def test_an_indistinguishable_pair_gets_an_interval_around_zero() -> None:
    y, c, h = _regression(2000, 5, 5.0, 5.0)
    result = compare({"rmse": False}, "regression", y, c, h)["rmse"]
    assert result.improvement_low < 0 < result.improvement_high


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    y, c, h = _regression(800, 6, 4.5, 5.0)
    first = compare({"mae": False}, "regression", y, c, h, seed=11)["mae"]
    assert compare({"mae": False}, "regression", y, c, h, seed=11)["mae"] == first
    assert compare({"mae": False}, "regression", y, c, h, seed=12)["mae"].difference_low != first.difference_low


def test_groups_are_resampled_whole_and_widen_the_interval_when_rows_within_them_move_together() -> None:
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(40), 50)  # 40 hours of 50 flights
    shared = np.repeat(rng.normal(0, 3, 40), 50)  # what one hour's weather does to both models' errors
    y = rng.normal(0, 10, 2000)
    c = y + shared * 1.2 + rng.normal(0, 1, 2000)
    h = y + shared + rng.normal(0, 1, 2000)
    by_row = compare({"mae": False}, "regression", y, c, h)["mae"]
    by_hour = compare({"mae": False}, "regression", y, c, h, groups=groups, unit="hour")["mae"]
    assert by_hour.units == 40 and by_hour.unit == "hour"
    assert by_hour.candidate == pytest.approx(by_row.candidate)  # the same rows, the same point values
    width = lambda r: r.difference_high - r.difference_low  # noqa: E731
    assert width(by_hour) > 1.5 * width(by_row)


def test_a_large_holdout_draws_fewer_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comparison, "MAX_UNIT_RESAMPLES", 2000 * 250)
    y, c, h = _regression(2000, 8, 4.0, 5.0)
    assert compare({"rmse": False}, "regression", y, c, h)["rmse"].resamples == 250
    monkeypatch.setattr(comparison, "MAX_UNIT_RESAMPLES", 2000 * 10)
    assert compare({"rmse": False}, "regression", y, c, h)["rmse"].resamples == comparison.MIN_RESAMPLES


def test_bad_inputs_say_what_is_wrong() -> None:
    y, c, h = _regression(100, 9, 4.0, 5.0)
    with pytest.raises(ValueError, match="one value per held-out row"):
        compare({"rmse": False}, "regression", y, c[:-1], h)
    with pytest.raises(ValueError, match="no held-out rows"):
        compare({"rmse": False}, "regression", y[:0], c[:0], h[:0])
    one_class = np.zeros(100)
    with pytest.raises(ValueError, match="roc_auc cannot be computed"):
        compare({"roc_auc": True}, "binary_classification", one_class, np.full(100, 0.2), np.full(100, 0.3))
