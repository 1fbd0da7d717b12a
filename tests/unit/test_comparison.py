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


# -- compatibility -----------------------------------------------------------------------------------------
def test_broken_rows_of_a_classifier_are_those_the_champion_got_right_and_the_candidate_gets_wrong() -> None:
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0], dtype=float)
    champion = np.array([0.9, 0.8, 0.2, 0.7, 0.3, 0.1, 0.6, 0.4])  # right on all but rows 3 and 4
    candidate = np.array([0.9, 0.4, 0.6, 0.2, 0.9, 0.1, 0.6, 0.4])  # breaks rows 1 and 2, fixes 3 and 4
    result = comparison.compatibility("binary_classification", y, candidate, champion, resamples=300)
    assert (result.broken, result.rows, result.rate) == (2, 8, 0.25)
    assert result.rate_low <= 0.25 <= result.rate_high
    assert "champion's label was right" in result.definition


def test_broken_rows_of_a_regressor_are_those_whose_error_grows_beyond_the_tolerance() -> None:
    y = np.zeros(5)
    champion = np.array([1.0, -1.0, 2.0, 0.0, 3.0])
    candidate = np.array([1.4, -2.5, 0.0, 0.6, 3.0])  # errors grow by 0.4, 1.5, -2, 0.6, 0
    assert comparison.compatibility("regression", y, candidate, champion, tolerance=0.5).broken == 2
    default = comparison.compatibility("regression", y, candidate, champion)  # tolerance: champion's MAE 1.4
    assert default.tolerance == pytest.approx(1.4) and default.broken == 1
    assert "grows by more than 1.4" in default.definition


def test_identical_models_break_nothing_and_a_worse_one_breaks_rows_with_an_interval() -> None:
    y, c, h = _regression(4000, 3, 8.0, 2.0)
    same = comparison.compatibility("regression", y, h, h)
    assert same.broken == 0 and same.rate_high == 0.0
    worse = comparison.compatibility("regression", y, c, h, tolerance=1.0)
    assert 0.3 < worse.rate_low < worse.rate < worse.rate_high < 0.8
    assert worse.text().startswith(f"{worse.rate:.1%} of rows [95% CI ")


# -- slices ------------------------------------------------------------------------------------------------
def test_holm_adjustment_matches_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005, 0.5, 0.2, 0.04]
    assert comparison.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))


def _sliced(n_per_slice: int, seed: int, worse_slice: str | None, slices: str = "abcd") -> tuple[np.ndarray, ...]:
    """Both models equally good (noise sd 3) except the candidate, on ``worse_slice``, with noise sd 6."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(list(slices), n_per_slice)
    y = rng.normal(0, 10, len(labels))
    candidate_noise = np.where(labels == worse_slice, 6.0, 3.0)
    return y, y + rng.normal(0, candidate_noise), y + rng.normal(0, 3.0, len(labels)), labels


def _slices(y: np.ndarray, c: np.ndarray, h: np.ndarray, labels: np.ndarray, **options: float) -> list:
    settings = {"min_rows": 100, "margin": 0.05, "alpha": 0.05, "resamples": 300, "seed": 1} | options
    return comparison.compare_slices("rmse", False, "regression", y, c, h, {"segment": labels}, **settings)


def test_a_clearly_worse_slice_is_found_and_named() -> None:
    y, c, h, labels = _sliced(500, 0, worse_slice="c")
    result = {s.value: s for s in _slices(y, c, h, labels)}
    assert result["c"].status == "regressed" and result["c"].name == "segment = c"
    assert result["c"].adjusted_p < 0.05 and result["c"].comparison.improvement < -0.5
    assert all(result[v].status == "ok" for v in "abd")
    assert all(result[v].adjusted_p >= result[v].p_value for v in "abcd")


def test_slices_under_the_minimum_size_are_insufficient_evidence_never_passed() -> None:
    y, c, h, labels = _sliced(500, 0, worse_slice="c")
    small = np.where(labels == "c", "tiny", labels)
    small[np.flatnonzero(small == "tiny")[50:]] = "c"  # 50 rows of "tiny", the rest still "c"
    result = {s.value: s for s in _slices(y, c, h, small)}
    assert result["tiny"].status == "insufficient evidence" and result["tiny"].rows == 50
    assert result["tiny"].comparison is None and "fewer than 100 rows" in result["tiny"].note


def test_the_slice_margin_tolerates_a_small_loss() -> None:
    rng = np.random.default_rng(4)
    labels = np.repeat(list("ab"), 2000)
    y = rng.normal(0, 10, 4000)
    h = y + rng.normal(0, 3.0, 4000)
    c = np.where(labels == "a", y + rng.normal(0, 3.09, 4000), h)  # about 3% worse on slice a
    assert {s.status for s in _slices(y, c, h, labels, margin=0.10)} == {"ok"}
    assert {s.value for s in _slices(y, c, h, labels, margin=0.0) if s.status == "regressed"} <= {"a"}


def test_equally_good_models_rarely_show_a_regressed_slice_across_many_slices() -> None:
    """Family-wise error: with ten slices and no real difference, a regression is found in few trials."""
    trials = 60
    flagged = 0
    for seed in range(trials):
        y, c, h, labels = _sliced(120, seed, worse_slice=None, slices="abcdefghij")
        flagged += any(s.status == "regressed" for s in _slices(y, c, h, labels, margin=0.0, resamples=200))
    assert flagged / trials <= 0.05 + 2 * (0.05 * 0.95 / trials) ** 0.5, f"{flagged} of {trials} trials"


def test_one_resampling_serves_the_metrics_the_broken_rows_and_the_slices_of_a_decision() -> None:
    y, c, h, labels = _sliced(400, 5, worse_slice="b")
    shared = comparison.Resampling.draw(len(y), resamples=400, seed=3)
    assert shared.draws == 400 and shared.counts.dtype == np.uint8 and (shared.counts.sum(axis=1) == len(y)).all()
    own = {"resamples": 400, "seed": 3}
    # Drawn once or by each figure with the same seed: the same resamples, the same intervals.
    assert comparison.compare({"rmse": False}, "regression", y, c, h, resampling=shared) == comparison.compare(
        {"rmse": False}, "regression", y, c, h, **own
    )
    assert comparison.compatibility("regression", y, c, h, resampling=shared) == comparison.compatibility(
        "regression", y, c, h, **own
    )
    # A slice's figures from the shared resamples agree with resampling the slice on its own.
    from_shared = {s.value: s for s in _slices(y, c, h, labels, resampling=shared)}
    rows = labels == "b"
    alone = comparison.compare({"rmse": False}, "regression", y[rows], c[rows], h[rows], **own)["rmse"]
    slice_b = from_shared["b"].comparison
    assert slice_b.candidate == pytest.approx(alone.candidate) and slice_b.units == rows.sum()
    width = alone.improvement_high - alone.improvement_low
    assert abs((slice_b.improvement_high - slice_b.improvement_low) - width) < 0.25 * width
    assert from_shared["b"].status == "regressed" and {from_shared[v].status for v in "acd"} == {"ok"}
    with pytest.raises(ValueError, match="same held-out rows"):
        comparison.compatibility("regression", y[:-1], c[:-1], h[:-1], resampling=shared)
