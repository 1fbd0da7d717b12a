"""Unit tests of retrainer.config: loading, environment expansion, path resolution and every validation rule."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from retrainer.config import ColumnType, ConfigError, ProjectConfig, Task, expand_env, load_config, parse_config

FLIGHTS_CONFIG = Path(__file__).resolve().parents[2] / "projects" / "flights.yaml"


def _write(folder: Path, document: Any, name: str = "project.yaml") -> Path:
    path = folder / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def make_document(synth: SimpleNamespace) -> Callable[..., dict[str, Any]]:
    """A fresh synthetic project document, optionally edited in place by ``edit``."""

    def make(edit: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> dict[str, Any]:
        document = copy.deepcopy(synth.config_dict(**options))
        if edit is not None:
            edit(document)
        return document

    return make


def _error_of(document: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, document))
    return str(caught.value)


# -- loading ------------------------------------------------------------------------------------------------
def test_demo_config_loads_with_its_declared_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRAINER_DATA_DIR", raising=False)
    config = load_config(FLIGHTS_CONFIG)
    assert config.name == "flights_arr_delay"
    assert config.task is Task.REGRESSION
    assert config.schema_.timestamp == "time_hour"
    assert config.schema_.target == "arr_delay"
    assert config.metric.name == "rmse" and not config.metric.greater_is_better
    assert config.estimator_class == "xgboost.XGBRegressor"
    assert "dep_delay" in config.numeric_features and "carrier" in config.categorical_features
    # The default ${RETRAINER_DATA_DIR:-../data} is resolved against projects/, i.e. the repository's data/.
    assert config.data.root_uri == str(FLIGHTS_CONFIG.parent.parent.resolve() / "data" / "flights_arr_delay")
    assert config.schedule.start_date == datetime(2013, 1, 8, tzinfo=UTC)


def test_synthetic_config_loads_and_fills_defaults(
    tmp_path: Path, make_document: Callable[..., dict[str, Any]]
) -> None:
    config = load_config(_write(tmp_path, make_document(estimator="xgboost")))
    assert isinstance(config, ProjectConfig)
    assert config.schema_.columns["region"] is ColumnType.CATEGORY
    assert config.numeric_features == ["x1", "x2"]
    assert config.categorical_features == ["region"]
    assert config.estimator_class == "xgboost.XGBRegressor"  # the task's default
    assert config.model_name == config.name  # no registered_model given
    assert config.validation.suite == "synthetic_sales"


def test_classification_config_defaults_to_the_xgboost_classifier(
    tmp_path: Path, make_document: Callable[..., dict[str, Any]]
) -> None:
    config = load_config(_write(tmp_path, make_document(task="binary_classification", estimator="xgboost")))
    assert config.task is Task.BINARY_CLASSIFICATION
    assert config.estimator_class == "xgboost.XGBClassifier"
    assert config.metric.greater_is_better  # roc_auc


def test_metric_direction_can_be_overridden(tmp_path: Path, make_document: Callable[..., dict[str, Any]]) -> None:
    document = make_document(lambda d: d["metric"].update(direction="maximize"))
    assert load_config(_write(tmp_path, document)).metric.greater_is_better


def test_naive_schedule_dates_are_taken_as_utc(
    tmp_path: Path, make_document: Callable[..., dict[str, Any]]
) -> None:
    document = make_document(lambda d: d["schedule"].update(start_date="2024-01-01T00:00:00"))
    assert load_config(_write(tmp_path, document)).schedule.start_date.tzinfo is UTC


# -- environment variables ----------------------------------------------------------------------------------
def test_env_var_with_default_uses_the_variable_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_document: Callable[..., dict[str, Any]]
) -> None:
    monkeypatch.setenv("SYNTH_ROOT", str(tmp_path / "elsewhere"))
    document = make_document(lambda d: d["data"].update(root_uri="${SYNTH_ROOT:-data}/synthetic"))
    assert load_config(_write(tmp_path, document)).data.root_uri == str(tmp_path / "elsewhere" / "synthetic")


def test_env_var_with_default_falls_back_to_the_default_when_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_document: Callable[..., dict[str, Any]]
) -> None:
    monkeypatch.delenv("SYNTH_ROOT", raising=False)
    document = make_document(lambda d: d["data"].update(root_uri="${SYNTH_ROOT:-data}/synthetic"))
    assert load_config(_write(tmp_path, document)).data.root_uri == str(tmp_path.resolve() / "data" / "synthetic")


def test_env_var_without_default_is_substituted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTH_BUCKET", "my-bucket")
    assert expand_env({"a": ["s3://${SYNTH_BUCKET}/x", 3]}) == {"a": ["s3://my-bucket/x", 3]}


def test_unset_env_var_without_default_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_document: Callable[..., dict[str, Any]]
) -> None:
    monkeypatch.delenv("SYNTH_MISSING_VAR", raising=False)
    document = make_document(lambda d: d["data"].update(root_uri="${SYNTH_MISSING_VAR}/x"))
    assert "SYNTH_MISSING_VAR" in _error_of(document, tmp_path)


def test_empty_default_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTH_EMPTY", raising=False)
    assert expand_env("a${SYNTH_EMPTY:-}b") == "ab"


# -- paths --------------------------------------------------------------------------------------------------
def test_relative_root_uri_is_resolved_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_document: Callable[..., dict[str, Any]]
) -> None:
    folder = tmp_path / "projects"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)  # not the config's folder
    config = load_config(_write(folder, make_document(root_uri="../store/synthetic")))
    assert config.data.root_uri == str(tmp_path.resolve() / "store" / "synthetic")


def test_absolute_root_uri_is_kept(tmp_path: Path, make_document: Callable[..., dict[str, Any]]) -> None:
    target = tmp_path / "abs" / "root"
    config = load_config(_write(tmp_path, make_document(root_uri=f"{target}/")))
    assert config.data.root_uri == str(target)  # trailing slash dropped


def test_s3_root_uri_is_kept_as_is(tmp_path: Path, make_document: Callable[..., dict[str, Any]]) -> None:
    config = load_config(_write(tmp_path, make_document(root_uri="s3://bucket/prefix/")))
    assert config.data.root_uri == "s3://bucket/prefix"


def test_root_uri_with_an_unsupported_scheme_is_rejected(
    tmp_path: Path, make_document: Callable[..., dict[str, Any]]
) -> None:
    document = make_document(root_uri="gs://bucket/prefix")
    assert "data.root_uri" in _error_of(document, tmp_path)


# -- validation errors name the field -----------------------------------------------------------------------
INVALID = {
    "unknown metric": (lambda d: d["metric"].update(name="mape"), ["metric.name", "unknown metric 'mape'"]),
    "metric not for task": (
        lambda d: d["metric"].update(name="roc_auc"),
        ["metric:", "'roc_auc' does not apply to task 'regression'"],
    ),
    "feature not in schema": (lambda d: d.update(features=["x1", "x3"]), ["features:", "'x3'", "schema.columns"]),
    "target as feature": (lambda d: d.update(features=["x1", "y"]), ["features:", "target 'y'"]),
    "datetime feature": (lambda d: d.update(features=["x1", "ts"]), ["features:", "'ts' is a datetime"]),
    "feature listed twice": (lambda d: d.update(features=["x1", "x1"]), ["features:", "twice"]),
    "no features": (lambda d: d.update(features=[]), ["features must list at least one column"]),
    "timestamp not datetime": (
        lambda d: d["schema"]["columns"].update(ts="string"),
        ["schema:", "timestamp column 'ts' must have type 'datetime'"],
    ),
    "target not a column": (lambda d: d["schema"].update(target="sales"), ["schema:", "target column 'sales'"]),
    "unknown column type": (lambda d: d["schema"]["columns"].update(x1="decimal"), ["schema.columns.x1"]),
    "key feature not a feature": (
        lambda d: d["drift"].update(key_features=["y"]),
        ["drift.key_features:", "'y' is not a feature"],
    ),
    "cron with 4 fields": (
        lambda d: d["schedule"].update(cron="0 3 * *"),
        ["schedule.cron", "not a valid 5-field cron"],
    ),
    "end before start": (
        lambda d: d["schedule"].update(start_date="2024-02-01", end_date="2024-01-01"),
        ["schedule:", "end_date is before start_date"],
    ),
    "typo at the top level": (lambda d: d.update(promotoin={"floor": 1.0}), ["promotoin", "Extra inputs"]),
    "typo in a section": (lambda d: d["holdout"].update(fracton=0.5), ["holdout.fracton", "Extra inputs"]),
    "holdout fraction out of range": (lambda d: d["holdout"].update(fraction=1.5), ["holdout.fraction"]),
    "negative margin": (lambda d: d["promotion"].update(min_improvement=-0.1), ["promotion.min_improvement"]),
    "unknown promotion rule": (lambda d: d["promotion"].update(rule="beats"), ["promotion.rule", "superiority"]),
    "confidence out of range": (lambda d: d["promotion"].update(confidence=1.2), ["promotion.confidence"]),
    "too few resamples": (lambda d: d["promotion"].update(resamples=10), ["promotion.resamples"]),
    "group_by not a column": (
        lambda d: d["promotion"].update(group_by="day"),
        ["promotion.group_by: 'day' is not in schema.columns"],
    ),
    "slice column not a column": (
        lambda d: d["promotion"].update(slices={"columns": ["carrier"]}),
        ["promotion.slices.columns: 'carrier' is not in schema.columns"],
    ),
    "slice column is the target": (
        lambda d: d["promotion"].update(slices={"columns": ["y"]}),
        ["promotion.slices.columns: 'y' is the target"],
    ),
    "slice alpha out of range": (
        lambda d: d["promotion"].update(slices={"alpha": 0.9}),
        ["promotion.slices.alpha"],
    ),
    "broken-row ceiling above 1": (
        lambda d: d["promotion"].update(compatibility={"max_broken": 2}),
        ["promotion.compatibility.max_broken"],
    ),
    "unknown secondary metric": (
        lambda d: d["promotion"].update(secondary={"mape": {"floor": 1}}),
        ["promotion.secondary", "unknown metric 'mape'"],
    ),
    "secondary metric not for the task": (
        lambda d: d["promotion"].update(secondary={"f1": {"floor": 0.5}}),
        ["promotion.secondary: 'f1' does not apply to task 'regression'"],
    ),
    "secondary metric is the primary": (
        lambda d: d["promotion"].update(secondary={"rmse": {"must_improve": True}}),
        ["promotion.secondary: 'rmse' is the primary metric"],
    ),
    "class without module": (lambda d: d["estimator"].update({"class": "Ridge"}), ["estimator.class", "'Ridge'"]),
    "bad project name": (lambda d: d.update(name="Synthetic-Sales"), ["name:", "pattern"]),
    "blank root uri": (lambda d: d["data"].update(root_uri="  "), ["data.root_uri", "must not be empty"]),
    "missing required section": (lambda d: d.pop("validation"), ["validation", "Field required"]),
}


@pytest.mark.parametrize(("edit", "expected"), INVALID.values(), ids=INVALID.keys())
def test_invalid_config_error_names_the_field(
    edit: Callable[[dict[str, Any]], None],
    expected: list[str],
    tmp_path: Path,
    make_document: Callable[..., dict[str, Any]],
) -> None:
    message = _error_of(make_document(edit), tmp_path)
    assert str(tmp_path / "project.yaml") in message
    for part in expected:
        assert part in message


def test_cron_with_out_of_range_values_is_rejected(
    tmp_path: Path, make_document: Callable[..., dict[str, Any]]
) -> None:
    message = _error_of(make_document(lambda d: d["schedule"].update(cron="61 25 * * 9")), tmp_path)
    assert "schedule.cron" in message


def test_every_invalid_field_is_reported_at_once(
    tmp_path: Path, make_document: Callable[..., dict[str, Any]]
) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["metric"]["name"] = "mape"
        document["holdout"]["fraction"] = 2

    message = _error_of(make_document(edit), tmp_path)
    assert "metric.name" in message and "holdout.fraction" in message


def test_classification_rejects_a_regression_metric(
    tmp_path: Path, make_document: Callable[..., dict[str, Any]]
) -> None:
    document = make_document(task="binary_classification", metric="rmse")
    assert "'rmse' does not apply to task 'binary_classification'" in _error_of(document, tmp_path)


# -- unreadable files ---------------------------------------------------------------------------------------
def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: synthetic\nfeatures: [x1, x2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("document", ["- a\n- b\n", "just a string\n", ""], ids=["list", "scalar", "empty"])
def test_non_mapping_yaml_is_a_config_error(document: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(_write(tmp_path, document))


def test_parse_config_names_its_source(tmp_path: Path, make_document: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(ConfigError, match=r"^inline\.yaml is invalid"):
        parse_config(make_document(lambda d: d.pop("task")), tmp_path, source="inline.yaml")
