"""Pure modelling functions: the training pipeline, the holdout split and the metrics.

The preprocessing is part of the fitted pipeline, so the model logged to MLflow serves with exactly the code
it was trained with, and it holds only scikit-learn and estimator objects (no platform code is needed to load
it).
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retrainer.config import Task

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from retrainer.config import ProjectConfig


class ModelingError(ValueError):
    """The data or the estimator settings cannot produce a model."""


@dataclass(frozen=True)
class HoldoutSplit:
    """The rows a cycle trains on and the newest rows it holds out for evaluation."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_start: str


def prepare(frame: pd.DataFrame, config: ProjectConfig) -> tuple[pd.DataFrame, pd.Series]:
    """Select the features and target, with stable dtypes; rows without a target are dropped.

    Numeric features become float64 (a missing value stays NaN), categorical ones strings (missing stays
    None), so that training, the MLflow signature and serving agree on types.

    Returns:
        The feature frame and the target series.

    Raises:
        ModelingError: A feature or the target is missing, or no row has a target.
    """
    import pandas as pd

    target = config.schema_.target
    missing = [c for c in [*config.features, target] if c not in frame.columns]
    if missing:
        raise ModelingError(f"columns missing from the data: {missing}")
    has_target = frame[target].notna()
    labelled = frame if has_target.all() else frame[has_target]
    if labelled.empty:
        raise ModelingError(f"no row has a value for the target {target!r}")
    features = features_of(labelled, config)
    y = labelled[target]
    if config.task is Task.BINARY_CLASSIFICATION:
        labels = set(pd.unique(y))
        if not labels <= {0, 1}:
            raise ModelingError(
                f"target {target!r} of a binary task must be 0/1 or boolean, found {sorted(labels)[:5]}"
            )
        y = y.astype("int64")
    else:
        y = pd.to_numeric(y, errors="raise").astype("float64")
    return features.reset_index(drop=True), y.reset_index(drop=True)


def features_of(frame: pd.DataFrame, config: ProjectConfig) -> pd.DataFrame:
    """The model's input columns of ``frame`` (labelled or not), typed as in training and serving.

    Raises:
        ModelingError: A feature is missing.
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in config.features if c not in frame.columns]
    if missing:
        raise ModelingError(f"columns missing from the data: {missing}")
    features = pd.DataFrame(index=frame.index)
    for column in config.numeric_features:
        features[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in config.categorical_features:
        values = frame[column]
        # Missing stays NaN (None and NaN alike) so the pipeline's imputer sees it as missing.
        features[column] = (
            values.astype("object").where(values.isna(), values.astype(str)).where(values.notna(), np.nan)
        )
    return features


def model_columns(config: ProjectConfig, *extra: str) -> list[str]:
    """The columns training and evaluation read: features, target and timestamp (and ``extra``)."""
    return list(dict.fromkeys([*config.features, config.schema_.target, config.schema_.timestamp, *extra]))


def split_holdout(frame: pd.DataFrame, config: ProjectConfig, holdout_start: str | None = None) -> HoldoutSplit:
    """Hold out the newest rows of a window by timestamp.

    Args:
        frame: The window's rows.
        config: The project (timestamp column, holdout fraction and minimum rows).
        holdout_start: Reuse a split point recorded earlier (ISO timestamp) instead of computing it.

    Raises:
        ModelingError: Either side would have fewer rows than ``holdout.min_rows``.
    """
    import pandas as pd

    # Only labelled rows with a timestamp can be trained on or scored; late labels leave the newest rows empty.
    ts_all = pd.to_datetime(frame[config.schema_.timestamp], utc=True)
    usable = frame[config.schema_.target].notna() & ts_all.notna()
    if not usable.all():  # a copy of the window only when rows must go
        frame = frame[usable]
    ts = ts_all[frame.index]
    if frame.empty:
        raise ModelingError(f"no row of the window has both a timestamp and a value for {config.schema_.target!r}")
    if holdout_start is None:
        split_at = ts.quantile(1 - config.holdout.fraction, interpolation="higher")
    else:
        split_at = pd.Timestamp(holdout_start)
    is_holdout = ts >= split_at
    train, holdout = frame[~is_holdout], frame[is_holdout]
    minimum = config.holdout.min_rows
    if len(train) < minimum or len(holdout) < minimum:
        raise ModelingError(
            f"window too small: {len(train)} training and {len(holdout)} held-out labelled rows "
            f"(holdout.min_rows is {minimum})"
        )
    for part in (train, holdout):  # renumbered in place: reset_index would copy every column again
        part.index = pd.RangeIndex(len(part))
    return HoldoutSplit(train, holdout, split_at.isoformat())


def _import(path: str) -> type:
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ModelingError(f"estimator class {path!r} cannot be imported: {error}") from None


def make_estimator(config: ProjectConfig, overrides: dict[str, Any] | None = None) -> Any:
    """Instantiate the configured estimator with its parameters and seed.

    Raises:
        ModelingError: The class cannot be imported, has no such parameter, or a value is out of its range.
    """
    cls = _import(config.estimator_class)
    params = {**config.estimator.params, **(overrides or {})}
    accepted = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    if "random_state" in accepted or takes_kwargs:
        params.setdefault("random_state", config.estimator.seed)
    if not takes_kwargs or cls.__module__.startswith("xgboost"):
        known = set(accepted) | (_xgboost_params() if cls.__module__.startswith("xgboost") else set())
        unknown = sorted(set(params) - known - {"self"})
        if unknown:
            raise ModelingError(
                f"estimator {config.estimator_class} has no parameter {', '.join(map(repr, unknown))} "
                "(estimator.params)"
            )
    try:
        estimator = cls(**params)
    except TypeError as error:
        raise ModelingError(f"estimator {config.estimator_class} rejects its params: {error}") from None
    _check_params(estimator, params, config.estimator_class)
    return estimator


# xgboost validates its parameters only when it trains, and some not at all (n_estimators: -5 trains no tree):
# the ranges of its documented numeric parameters, as (lowest, lowest allowed, highest).
_XGBOOST_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "n_estimators": (1, True, None),
    "max_depth": (0, True, None),
    "max_leaves": (0, True, None),
    "max_bin": (2, True, None),
    "learning_rate": (0, False, None),
    "gamma": (0, True, None),
    "min_child_weight": (0, True, None),
    "max_delta_step": (0, True, None),
    "subsample": (0, False, 1),
    "colsample_bytree": (0, False, 1),
    "colsample_bylevel": (0, False, 1),
    "colsample_bynode": (0, False, 1),
    "reg_alpha": (0, True, None),
    "reg_lambda": (0, True, None),
    "scale_pos_weight": (0, False, None),
    "num_parallel_tree": (1, True, None),
}
_XGBOOST_INTEGERS = {"n_estimators", "max_depth", "max_leaves", "max_bin", "num_parallel_tree", "n_jobs"}


def _xgboost_params() -> set[str]:
    from xgboost import XGBModel

    return set(inspect.signature(XGBModel.__init__).parameters) - {"kwargs"}


def _check_params(estimator: Any, params: dict[str, Any], class_path: str) -> None:
    """Refuse parameter values the estimator would train a useless model with (or fail on much later).

    Raises:
        ModelingError: Naming the parameter, its value and what it must be.
    """
    if type(estimator).__module__.startswith("xgboost"):
        for name, value in params.items():
            if value is None or (name not in _XGBOOST_RANGES and name not in _XGBOOST_INTEGERS):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ModelingError(f"estimator.params.{name} of {class_path} must be a number, got {value!r}")
            if name in _XGBOOST_INTEGERS and not float(value).is_integer():
                raise ModelingError(
                    f"estimator.params.{name} of {class_path} must be a whole number, got {value!r}"
                )
            if name not in _XGBOOST_RANGES:
                continue
            low, inclusive, high = _XGBOOST_RANGES[name]
            if value < low or (value == low and not inclusive) or (high is not None and value > high):
                bounds = f"{'≥' if inclusive else '>'} {low}" + (f" and ≤ {high}" if high is not None else "")
                raise ModelingError(f"estimator.params.{name} of {class_path} must be {bounds}, got {value!r}")
        return
    validate = getattr(estimator, "_validate_params", None)  # scikit-learn's own parameter constraints
    if validate is not None and getattr(estimator, "_parameter_constraints", None) is not None:
        try:
            validate()
        except ValueError as error:
            raise ModelingError(f"estimator.params of {class_path}: {error}") from None


# xgboost splits a categorical feature one category against the rest (as on one-hot columns) up to this many
# categories: the same trees as one-hot encoding gives, without a dense column per category.
ONE_VS_REST_CATEGORIES = 1_000_000


def native_categories(config: ProjectConfig) -> bool:
    """xgboost takes categorical features as codes (one column each) instead of one-hot columns."""
    return bool(config.categorical_features) and config.estimator_class.startswith("xgboost.")


def build_pipeline(config: ProjectConfig, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Preprocessing (impute, encode categories) and the estimator, as one scikit-learn pipeline.

    Categorical features are one-hot encoded, except for xgboost, which gets one code per category and
    splits on them natively (one category against the rest, as it would on one-hot columns): for the demo's
    ~110 one-hot columns, 10M rows of float64 were ~9 GB; the codes take one column per feature.
    """
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    transformers: list[tuple[str, Any, list[str]]] = []
    if config.numeric_features:
        transformers.append(
            ("numeric", SimpleImputer(strategy="median", keep_empty_features=True), config.numeric_features)
        )
    native = native_categories(config)
    if config.categorical_features:
        # Missing is a category of its own; rare ones (< 5 rows) share one; unseen ones match no trained category
        # (no one-hot column, or the code NaN, which xgboost sends where "none of the split's category" goes).
        encoder = (
            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, min_frequency=5)
            if native
            else OneHotEncoder(handle_unknown="ignore", min_frequency=5, sparse_output=False)
        )
        categorical = make_pipeline(SimpleImputer(strategy="constant", fill_value="__missing__"), encoder)
        transformers.append(("categorical", categorical, config.categorical_features))
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    native_params: dict[str, Any] = {}
    if native:
        native_params = {
            "enable_categorical": True,
            "feature_types": ["q"] * len(config.numeric_features) + ["c"] * len(config.categorical_features),
        }
        if "max_cat_to_onehot" not in config.estimator.params:
            native_params["max_cat_to_onehot"] = ONE_VS_REST_CATEGORIES
    estimator = make_estimator(config, {**native_params, **(overrides or {})})
    return Pipeline([("preprocess", preprocess), ("estimator", estimator)])


@dataclass(frozen=True)
class FittedModel:
    """A fitted pipeline and the device its estimator really trained on."""

    pipeline: Pipeline
    device: str  # "cpu", or xgboost's "cuda:0"; xgboost falls back to "cpu" where it finds no GPU


def fit_on_device(
    train: pd.DataFrame, config: ProjectConfig, overrides: dict[str, Any] | None = None
) -> FittedModel:
    """Fit the pipeline on the training rows, with xgboost on the GPU when ``training.device`` is ``cuda``.

    The fitted estimator is left set to predict on the CPU: the model is scored and served where there may be
    no GPU.
    """
    features, target = prepare(train, config)
    return fit_features(features, target, config, overrides)


def fit_features(
    features: pd.DataFrame, target: pd.Series, config: ProjectConfig, overrides: dict[str, Any] | None = None
) -> FittedModel:
    """:func:`fit_on_device` on rows already through :func:`prepare` (a caller that needs them too)."""
    gpu = config.training.device == "cuda"
    pipeline = build_pipeline(config, {"device": "cuda", **(overrides or {})} if gpu else overrides)
    pipeline.fit(features, target)
    if not gpu:
        return FittedModel(pipeline, "cpu")
    estimator = pipeline.named_steps["estimator"]
    device = json.loads(estimator.get_booster().save_config())["learner"]["generic_param"]["device"]
    estimator.set_params(device="cpu")
    return FittedModel(pipeline, device)


def fit(train: pd.DataFrame, config: ProjectConfig, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Fit the pipeline on the training rows (see :func:`fit_on_device`)."""
    return fit_on_device(train, config, overrides).pipeline


def predict_for_metric(model: Any, features: pd.DataFrame, task: Task) -> Any:
    """Predictions in the form the metrics need: values for regression, P(class 1) for classification."""
    if task is Task.BINARY_CLASSIFICATION:
        if not hasattr(model, "predict_proba"):
            raise ModelingError(
                f"{type(model).__name__} has no predict_proba: binary classification needs class probabilities "
                "(for an SVM, wrap it in sklearn.calibration.CalibratedClassifierCV)"
            )
        return model.predict_proba(features)[:, 1]
    return model.predict(features)


def compute_metrics(y_true: Any, y_pred: Any, task: Task) -> dict[str, float]:
    """Every metric of the task, so the primary one can be chosen freely in configuration.

    For classification ``y_pred`` is the probability of class 1.
    """
    import numpy as np
    from sklearn import metrics

    y_pred = np.asarray(y_pred, dtype="float64")
    if task is Task.REGRESSION:
        results = {
            "rmse": math.sqrt(metrics.mean_squared_error(y_true, y_pred)),
            "mae": metrics.mean_absolute_error(y_true, y_pred),
            "r2": metrics.r2_score(y_true, y_pred),
        }
    else:
        labels = (y_pred >= 0.5).astype(int)
        results = {
            "log_loss": metrics.log_loss(y_true, np.clip(y_pred, 1e-15, 1 - 1e-15), labels=[0, 1]),
            "accuracy": metrics.accuracy_score(y_true, labels),
            "f1": metrics.f1_score(y_true, labels, zero_division=0),
        }
        if len(set(np.asarray(y_true).tolist())) == 2:
            results["roc_auc"] = metrics.roc_auc_score(y_true, y_pred)
    # Non-finite values cannot travel through XCom or JSON.
    return {name: float(value) for name, value in results.items() if math.isfinite(value)}


def score(model: Any, frame: pd.DataFrame, config: ProjectConfig) -> dict[str, float]:
    """Metrics of a fitted model (pipeline or MLflow-loaded model) on labelled rows."""
    features, target = prepare(frame, config)
    return compute_metrics(target, predict_for_metric(model, features, config.task), config.task)
