"""xgboost takes categorical features as codes and grows the trees one-hot columns grew, in far less memory."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from retrainer import modeling


def _one_hot_pipeline(config, monkeypatch: pytest.MonkeyPatch, **overrides):  # type: ignore[no-untyped-def]
    with monkeypatch.context() as patch:
        patch.setattr(modeling, "native_categories", lambda _config: False)
        return modeling.build_pipeline(config, overrides)


def test_xgboost_on_codes_predicts_what_it_predicted_on_one_hot_columns(
    demo_weeks: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, split = demo_weeks.config, demo_weeks.split
    assert modeling.native_categories(config)
    features, target = modeling.prepare(split.train, config)
    holdout = split.holdout.copy()
    # Rows the training never saw: an unseen airline, a missing destination, an unseen airport.
    holdout.loc[holdout.index[:50], "carrier"] = "ZZ"
    holdout.loc[holdout.index[50:100], "dest"] = None
    holdout.loc[holdout.index[100:150], "origin"] = "XXX"
    holdout_features, _ = modeling.prepare(holdout, config)

    native = modeling.build_pipeline(config, {"n_estimators": 30}).fit(features, target)
    one_hot = _one_hot_pipeline(config, monkeypatch, n_estimators=30).fit(features, target)

    native_width = native[:-1].transform(holdout_features).shape[1]
    one_hot_width = one_hot[:-1].transform(holdout_features).shape[1]
    assert native_width == len(config.features)
    assert one_hot_width > 5 * native_width  # a column per destination, airline and airport
    np.testing.assert_allclose(native.predict(holdout_features), one_hot.predict(holdout_features), atol=1e-4)


def test_a_users_max_cat_to_onehot_is_kept(demo_weeks: SimpleNamespace) -> None:
    config = demo_weeks.config
    params = {**config.estimator.params, "max_cat_to_onehot": 4}
    custom = config.model_copy(update={"estimator": config.estimator.model_copy(update={"params": params})})
    estimator = modeling.build_pipeline(custom).named_steps["estimator"]
    assert estimator.get_params()["max_cat_to_onehot"] == 4
    assert estimator.get_params()["enable_categorical"] is True


def test_estimators_other_than_xgboost_keep_one_hot_columns(demo_weeks: SimpleNamespace) -> None:
    config = demo_weeks.config
    estimator = config.estimator.model_copy(update={"class_path": "sklearn.linear_model.Ridge", "params": {}})
    ridge = config.model_copy(update={"estimator": estimator})
    assert not modeling.native_categories(ridge)
    features, target = modeling.prepare(demo_weeks.split.train, ridge)
    pipeline = modeling.build_pipeline(ridge).fit(features, target)
    assert pipeline[:-1].transform(features).shape[1] > 5 * len(ridge.features)
