"""Unit tests of retrainer.modeling: data preparation, the holdout split, the estimator and the metrics."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from retrainer import modeling
from retrainer.config import Task
from retrainer.modeling import ModelingError


@pytest.fixture(scope="module")
def projects(synth: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One config per task x estimator family (only YAML files: nothing is landed)."""
    root = tmp_path_factory.mktemp("modeling")

    def make(name: str, **options: Any) -> Any:
        return synth.make_project(root / name, name, **options).config

    return SimpleNamespace(
        ridge=make("ridge"),
        xgb=make("xgb", estimator="xgboost", params={"n_estimators": 20, "subsample": 0.7, "n_jobs": 1}),
        logistic=make("logistic", task="binary_classification"),
        xgb_classifier=make("xgb_classifier", task="binary_classification", estimator="xgboost"),
    )


@pytest.fixture(scope="module")
def regression_rows(synth: SimpleNamespace) -> pd.DataFrame:
    return pd.concat([synth.week(w, 150) for w in range(3)], ignore_index=True)


@pytest.fixture(scope="module")
def classification_rows(synth: SimpleNamespace) -> pd.DataFrame:
    return pd.concat([synth.week(w, 200, task="binary_classification") for w in range(3)], ignore_index=True)


# -- prepare ------------------------------------------------------------------------------------------------
def test_prepare_drops_rows_without_target(projects: SimpleNamespace, synth: SimpleNamespace) -> None:
    frame = synth.week(0, 10)
    frame.loc[[2, 5], "y"] = np.nan
    features, target = modeling.prepare(frame, projects.ridge)
    assert len(features) == len(target) == 8
    assert list(features.index) == list(range(8))
    assert target.tolist() == frame["y"].drop(index=[2, 5]).tolist()


def test_prepare_gives_float64_numbers_and_string_categories(
    projects: SimpleNamespace, synth: SimpleNamespace
) -> None:
    frame = synth.week(0, 10)
    frame["x1"] = frame["x1"].astype("float32")
    frame["x2"] = frame["x2"].round().astype("Int64")
    frame.loc[0, "x2"] = pd.NA
    frame["region"] = frame["region"].cat.add_categories([7])
    frame.loc[1, "region"] = np.nan
    frame.loc[2, "region"] = 7
    frame["unused"] = "dropped"
    features, target = modeling.prepare(frame, projects.ridge)
    assert set(features.columns) == {"x1", "x2", "region"}
    assert features["x1"].dtype == "float64" and features["x2"].dtype == "float64"
    assert math.isnan(features.loc[0, "x2"])
    assert pd.isna(features.loc[1, "region"])  # missing stays missing, for the imputer
    assert features.loc[2, "region"] == "7"
    assert all(isinstance(v, str) for v in features["region"].drop(index=1))
    assert target.dtype == "float64"


def test_prepare_names_missing_columns(projects: SimpleNamespace, synth: SimpleNamespace) -> None:
    with pytest.raises(ModelingError, match=r"columns missing from the data: \['x2'\]"):
        modeling.prepare(synth.week(0, 10).drop(columns=["x2"]), projects.ridge)


def test_prepare_without_any_target_raises(projects: SimpleNamespace, synth: SimpleNamespace) -> None:
    frame = synth.week(0, 10).assign(y=np.nan)
    with pytest.raises(ModelingError, match="no row has a value for the target 'y'"):
        modeling.prepare(frame, projects.ridge)


def test_prepare_binary_target_must_be_zero_one(projects: SimpleNamespace, synth: SimpleNamespace) -> None:
    frame = synth.week(0, 10, task="binary_classification")
    frame.loc[0, "label"] = 2
    with pytest.raises(ModelingError, match="target 'label' of a binary task must be 0/1 or boolean"):
        modeling.prepare(frame, projects.logistic)


def test_prepare_accepts_boolean_binary_targets(projects: SimpleNamespace, synth: SimpleNamespace) -> None:
    frame = synth.week(0, 10, task="binary_classification")
    frame["label"] = frame["label"].astype(bool)
    _, target = modeling.prepare(frame, projects.logistic)
    assert target.dtype == "int64" and set(target) <= {0, 1}


# -- split_holdout ------------------------------------------------------------------------------------------
def test_split_holdout_holds_out_the_newest_fraction(
    projects: SimpleNamespace, regression_rows: pd.DataFrame
) -> None:
    split = modeling.split_holdout(regression_rows, projects.ridge)
    assert len(split.train) + len(split.holdout) == len(regression_rows)
    assert split.train["ts"].max() < split.holdout["ts"].min()
    assert pd.Timestamp(split.holdout_start) == split.holdout["ts"].min()
    assert abs(len(split.holdout) / len(regression_rows) - projects.ridge.holdout.fraction) < 0.02


def test_split_holdout_does_not_depend_on_row_order(
    projects: SimpleNamespace, regression_rows: pd.DataFrame
) -> None:
    shuffled = regression_rows.sample(frac=1.0, random_state=3)
    a = modeling.split_holdout(regression_rows, projects.ridge)
    b = modeling.split_holdout(shuffled, projects.ridge)
    assert a.holdout_start == b.holdout_start
    assert sorted(a.holdout["ts"]) == sorted(b.holdout["ts"])


def test_split_holdout_reuses_a_recorded_holdout_start(
    projects: SimpleNamespace, regression_rows: pd.DataFrame
) -> None:
    first = modeling.split_holdout(regression_rows, projects.ridge)
    again = modeling.split_holdout(regression_rows, projects.ridge, holdout_start=first.holdout_start)
    pd.testing.assert_frame_equal(first.holdout, again.holdout)
    pd.testing.assert_frame_equal(first.train, again.train)
    assert again.holdout_start == first.holdout_start


def test_split_holdout_with_a_recorded_start_ignores_rows_added_later(
    projects: SimpleNamespace, regression_rows: pd.DataFrame, synth: SimpleNamespace
) -> None:
    first = modeling.split_holdout(regression_rows, projects.ridge)
    older = synth.week(-1, 40)  # rows older than the split point only join the training side
    again = modeling.split_holdout(
        pd.concat([older, regression_rows], ignore_index=True), projects.ridge, first.holdout_start
    )
    pd.testing.assert_frame_equal(first.holdout, again.holdout)
    assert len(again.train) == len(first.train) + 40


def test_split_holdout_refuses_a_window_smaller_than_min_rows(
    projects: SimpleNamespace, synth: SimpleNamespace
) -> None:
    with pytest.raises(ModelingError, match=r"window too small: .* \(holdout.min_rows is 20\)"):
        modeling.split_holdout(synth.week(0, 60), projects.ridge)  # 12 held-out rows < 20


# -- make_estimator -----------------------------------------------------------------------------------------
def test_make_estimator_passes_the_seed_as_random_state(projects: SimpleNamespace) -> None:
    ridge = modeling.make_estimator(projects.ridge)
    assert type(ridge).__name__ == "Ridge" and ridge.random_state == 7
    xgb = modeling.make_estimator(projects.xgb)
    assert type(xgb).__name__ == "XGBRegressor"
    assert xgb.get_params()["random_state"] == 7 and xgb.get_params()["n_estimators"] == 20


def test_make_estimator_applies_overrides(projects: SimpleNamespace) -> None:
    assert modeling.make_estimator(projects.xgb, {"n_estimators": 3}).get_params()["n_estimators"] == 3
    assert modeling.make_estimator(projects.ridge, {"random_state": 99}).random_state == 99


def test_make_estimator_without_random_state_parameter(synth: SimpleNamespace, tmp_path: Any) -> None:
    project = synth.make_project(tmp_path, "linear", params={"fit_intercept": False})
    config = project.config.model_copy(
        update={
            "estimator": project.config.estimator.model_copy(
                update={"class_path": "sklearn.linear_model.LinearRegression"}
            )
        }
    )
    estimator = modeling.make_estimator(config)
    assert type(estimator).__name__ == "LinearRegression" and not estimator.fit_intercept


@pytest.mark.parametrize("class_path", ["sklearn.linear_model.NoSuchModel", "no_such_package.Model"])
def test_make_estimator_names_a_class_that_cannot_be_imported(projects: SimpleNamespace, class_path: str) -> None:
    config = projects.ridge.model_copy(
        update={"estimator": projects.ridge.estimator.model_copy(update={"class_path": class_path})}
    )
    with pytest.raises(ModelingError, match=rf"estimator class '{class_path}' cannot be imported"):
        modeling.make_estimator(config)


def test_make_estimator_rejects_an_unknown_parameter(projects: SimpleNamespace) -> None:
    with pytest.raises(ModelingError, match=r"sklearn.linear_model.Ridge has no parameter 'alpah'"):
        modeling.make_estimator(projects.ridge, {"alpah": 1.0})


# -- pipeline and fit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["ridge", "xgb"])
def test_pipeline_predicts_unseen_categories_and_missing_values(
    projects: SimpleNamespace, regression_rows: pd.DataFrame, variant: str
) -> None:
    config = getattr(projects, variant)
    model = modeling.fit(regression_rows, config)
    odd = pd.DataFrame(
        {
            "x1": [np.nan, 1.0, np.nan, 0.5],
            "x2": [0.0, np.nan, np.nan, 0.5],
            "region": ["atlantis", None, np.nan, "north"],
        }
    )
    predictions = model.predict(odd)
    assert predictions.shape == (4,)
    assert np.isfinite(predictions).all()


def test_pipeline_learns_the_synthetic_signal(projects: SimpleNamespace, regression_rows: pd.DataFrame) -> None:
    split = modeling.split_holdout(regression_rows, projects.ridge)
    model = modeling.fit(split.train, projects.ridge)
    metrics = modeling.score(model, split.holdout, projects.ridge)
    assert metrics["rmse"] < 0.8  # noise sd is 0.5
    assert metrics["r2"] > 0.95


@pytest.mark.parametrize("variant", ["xgb", "xgb_classifier", "logistic"])
def test_fit_is_deterministic_for_a_seed(
    projects: SimpleNamespace,
    regression_rows: pd.DataFrame,
    classification_rows: pd.DataFrame,
    variant: str,
) -> None:
    config = getattr(projects, variant)
    rows = regression_rows if config.task is Task.REGRESSION else classification_rows
    features, _ = modeling.prepare(rows, config)
    first = modeling.predict_for_metric(modeling.fit(rows, config), features, config.task)
    second = modeling.predict_for_metric(modeling.fit(rows, config), features, config.task)
    np.testing.assert_array_equal(first, second)


def test_the_seed_changes_a_stochastic_model(projects: SimpleNamespace, regression_rows: pd.DataFrame) -> None:
    features, _ = modeling.prepare(regression_rows, projects.xgb)
    seeded = modeling.fit(regression_rows, projects.xgb).predict(features)
    reseeded = modeling.fit(regression_rows, projects.xgb, {"random_state": 8}).predict(features)
    assert not np.array_equal(seeded, reseeded)  # subsample=0.7: the seed matters, so it is really used


def test_classifier_predictions_for_metrics_are_probabilities(
    projects: SimpleNamespace, classification_rows: pd.DataFrame
) -> None:
    config = projects.logistic
    model = modeling.fit(classification_rows, config)
    features, _ = modeling.prepare(classification_rows, config)
    proba = modeling.predict_for_metric(model, features, config.task)
    assert proba.min() >= 0.0 and proba.max() <= 1.0
    assert len(np.unique(proba)) > 2
    metrics = modeling.score(model, classification_rows, config)
    assert metrics["roc_auc"] > 0.85


# -- compute_metrics ----------------------------------------------------------------------------------------
def test_regression_metrics_have_the_expected_values() -> None:
    metrics = modeling.compute_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], Task.REGRESSION)
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert metrics["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert metrics["mae"] == pytest.approx(1 / 3)
    assert metrics["r2"] == pytest.approx(0.5)
    assert all(type(v) is float for v in metrics.values())


def test_classification_metrics_have_the_expected_values() -> None:
    metrics = modeling.compute_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], Task.BINARY_CLASSIFICATION)
    assert set(metrics) == {"log_loss", "accuracy", "f1", "roc_auc"}
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "task"),
    [
        ([1.0], [2.0], Task.REGRESSION),  # r2 is undefined on one row
        ([5.0, 5.0, 5.0], [5.0, 5.0, 5.0], Task.REGRESSION),  # constant target
        ([1, 1, 1], [1.0, 0.0, 0.5], Task.BINARY_CLASSIFICATION),  # one class: no roc_auc, extreme probs
        ([0, 0], [0.2, 0.3], Task.BINARY_CLASSIFICATION),  # no positive: f1 is 0, not NaN
    ],
    ids=["one-row", "constant", "one-class", "no-positive"],
)
def test_metrics_are_always_finite(y_true: list[float], y_pred: list[float], task: Task) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about undefined metrics; they must just be left out
        metrics = modeling.compute_metrics(y_true, y_pred, task)
    assert metrics  # something is always computed
    assert all(math.isfinite(v) for v in metrics.values())


def test_metrics_leave_out_roc_auc_with_a_single_class() -> None:
    metrics = modeling.compute_metrics([1, 1, 1], [0.9, 0.8, 0.7], Task.BINARY_CLASSIFICATION)
    assert "roc_auc" not in metrics and metrics["accuracy"] == 1.0
