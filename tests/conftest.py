"""Shared fixtures: a synthetic project (not the flights demo), its weekly batches, and a local MLflow store.

The synthetic project proves the platform is generic: its columns, task and estimator have nothing to do with
the demo dataset. ``y = 3*x1 - 2*x2 + region effect + noise`` for regression; for binary classification the
same signal, plus logistic noise, decides ``label`` (0/1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.catalog import Catalog
    from retrainer.config import ProjectConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
FLIGHTS_CONFIG = REPO_ROOT / "projects" / "flights.yaml"

FIRST_MONDAY = date(2024, 1, 1)  # weeks of the synthetic feed run Monday to Sunday (UTC)
REGION_EFFECT = {"north": 0.0, "south": 2.0, "east": -1.5, "west": 4.0}
COEFFICIENTS = {"x1": 3.0, "x2": -2.0}

ESTIMATORS = {
    ("regression", "linear"): "sklearn.linear_model.Ridge",
    ("binary_classification", "linear"): "sklearn.linear_model.LogisticRegression",
    ("regression", "xgboost"): None,  # None: the task's default estimator (xgboost)
    ("binary_classification", "xgboost"): None,
}
XGBOOST_PARAMS = {"n_estimators": 30, "max_depth": 3, "n_jobs": 1, "tree_method": "hist"}


# -- data ---------------------------------------------------------------------------------------------------
def week_start(week: int) -> date:
    """Monday of the synthetic feed's ``week`` (0-based)."""
    return FIRST_MONDAY + timedelta(weeks=week)


def batch_id(week: int) -> str:
    """Batch id of a week: its Monday, like the demo feed."""
    return week_start(week).isoformat()


def cutoff_after(week: int) -> datetime:
    """When the weekly cycle for ``week`` runs: the next Monday, 03:00 UTC."""
    return datetime.combine(week_start(week + 1), datetime.min.time(), UTC) + timedelta(hours=3)


def synthetic_week(
    week: int, rows: int = 200, *, task: str = "regression", seed: int = 0, x1_shift: float = 0.0
) -> pd.DataFrame:
    """One week of the synthetic feed, timestamps (tz-aware UTC) spread over the week and sorted."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, week % 2**32])  # weeks before the first are negative
    start = pd.Timestamp(week_start(week), tz="UTC")
    seconds = np.sort(rng.integers(0, 7 * 24 * 3600, rows))
    region = rng.choice(list(REGION_EFFECT), rows)
    x1 = rng.normal(x1_shift, 1.0, rows)
    x2 = rng.normal(0.0, 1.0, rows)
    signal = COEFFICIENTS["x1"] * x1 + COEFFICIENTS["x2"] * x2 + pd.Series(region).map(REGION_EFFECT).to_numpy()
    frame = pd.DataFrame(
        {
            "ts": start + pd.to_timedelta(seconds, unit="s"),
            "region": pd.Categorical(region, categories=list(REGION_EFFECT)),
            "x1": x1,
            "x2": x2,
        }
    )
    if task == "regression":
        frame["y"] = signal + rng.normal(0.0, 0.5, rows)
    else:
        frame["label"] = (signal + rng.logistic(0.0, 1.0, rows) > 1.0).astype("int64")
    return frame


# -- project ------------------------------------------------------------------------------------------------
def synthetic_config_dict(
    name: str = "synthetic_sales",
    *,
    task: str = "regression",
    estimator: str = "linear",
    root_uri: str = "data",
    metric: str | None = None,
    min_improvement: float = 0.0,
    floor: float | None = None,
    window: int = 4,
    min_rows: int = 20,
    params: dict[str, Any] | None = None,
    promotion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The YAML document of a synthetic project, as a mapping (tests may edit it before writing).

    Args:
        promotion: Further keys of the ``promotion`` section (e.g. ``approval``).
    """
    target = "y" if task == "regression" else "label"
    class_path = ESTIMATORS[(task, estimator)]
    estimator_section: dict[str, Any] = {"seed": 7}
    if class_path is not None:
        estimator_section["class"] = class_path
    if params is not None:
        estimator_section["params"] = params
    elif class_path is None:
        estimator_section["params"] = dict(XGBOOST_PARAMS)
    promotion = {"min_improvement": min_improvement, **(promotion or {})}
    if floor is not None:
        promotion["floor"] = floor
    return {
        "name": name,
        "description": "Synthetic data: proves nothing in the platform is specific to the demo.",
        "data": {"root_uri": root_uri},
        "schema": {
            "timestamp": "ts",
            "target": target,
            "columns": {
                "ts": "datetime",
                "region": "category",
                "x1": "float",
                "x2": "float",
                target: "float" if task == "regression" else "int",
            },
        },
        "task": task,
        "features": ["x1", "x2", "region"],
        "estimator": estimator_section,
        "metric": {"name": metric or ("rmse" if task == "regression" else "roc_auc")},
        "promotion": promotion,
        "drift": {"key_features": ["x1"]},
        "window": {"batches": window},
        "holdout": {"fraction": 0.2, "min_rows": min_rows},
        "validation": {"suite": name},
        "schedule": {"cron": "0 3 * * 1", "start_date": "2024-01-01"},
    }


@dataclass
class SyntheticProject:
    """A synthetic project written to disk: its YAML file, the loaded config and its batch catalog."""

    path: Path
    config: ProjectConfig
    task: str = "regression"
    landed: list[str] = field(default_factory=list)

    @property
    def catalog(self) -> Catalog:
        from retrainer.catalog import Catalog

        return Catalog(self.config)

    def land(self, weeks: range | list[int], rows: int = 200, **kwargs: Any) -> list[str]:
        """Land synthetic weeks as batches named after their Monday; returns the batch ids."""
        ids = land_weeks(self.config, weeks, rows=rows, task=self.task, **kwargs)
        self.landed.extend(ids)
        return ids

    def land_and_accept(self, weeks: range | list[int], rows: int = 200, **kwargs: Any) -> list[str]:
        """Land weeks, register them and accept them (standing in for a passing validation)."""
        ids = self.land(weeks, rows=rows, **kwargs)
        catalog = self.catalog
        catalog.register_new()
        for batch in ids:
            catalog.accept(batch, {"success": True, "summary": "accepted by the test"})
        return ids


def make_synthetic_project(folder: Path, name: str = "synthetic_sales", **options: Any) -> SyntheticProject:
    """Write ``<folder>/project.yaml`` for a synthetic project and load it (``root_uri`` relative to it)."""
    from retrainer.config import load_config

    folder.mkdir(parents=True, exist_ok=True)
    document = synthetic_config_dict(name, **options)
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return SyntheticProject(path=path, config=load_config(path), task=document["task"])


def land_weeks(
    config: ProjectConfig, weeks: range | list[int], rows: int = 200, *, task: str | None = None, **kwargs: Any
) -> list[str]:
    """Land one synthetic batch per week with ``Catalog(config).land``; returns the batch ids."""
    from retrainer.catalog import Catalog

    catalog = Catalog(config)
    task = task or config.task.value
    ids = []
    for week in weeks:
        catalog.land(batch_id(week), synthetic_week(week, rows, task=task, **kwargs))
        ids.append(batch_id(week))
    return ids


def synthetic_suite(name: str, target: str = "y") -> dict[str, Any]:
    """The synthetic feed's expectation suite (a new dataset's second file, beside its project YAML)."""
    return {
        "name": name,
        "expectations": [
            {
                "type": "expect_table_columns_to_match_set",
                "kwargs": {"column_set": ["ts", "region", "x1", "x2", target]},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": target}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "x1", "min_value": -20, "max_value": 20},
            },
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": "region", "value_set": list(REGION_EFFECT)},
            },
        ],
        "meta": {},
    }


def context_with_suite(folder: Path, name: str) -> Path:
    """A copy of the committed Great Expectations context with the synthetic suite ``name`` added."""
    import json
    import shutil

    root = folder / "great_expectations"
    shutil.copytree(REPO_ROOT / "great_expectations", root, ignore=shutil.ignore_patterns("uncommitted"))
    (root / "expectations" / f"{name}.json").write_text(json.dumps(synthetic_suite(name)))
    return root


def race_to_register_and_accept(config: ProjectConfig, batch_ids: list[str], workers: int = 8) -> None:
    """``workers`` threads, each with its own Catalog, register the landed batches and accept them all at once,
    as the drift monitor and the weekly cycle do on two machines; then checks that nothing was lost."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    from retrainer.catalog import BatchStatus, Catalog, CatalogError

    def ingest_and_accept(worker: int) -> None:
        catalog = Catalog(config)
        catalog.register_new()
        for batch in batch_ids:
            with contextlib.suppress(CatalogError):  # not registered yet by anyone: the next round gets it
                catalog.accept(batch, {"success": True, "summary": f"worker {worker}"})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(ingest_and_accept, range(workers)))
    catalog = Catalog(config)
    records = {r.batch_id: r for r in catalog.all()}
    far = datetime(2100, 1, 1, tzinfo=UTC)
    assert sorted(records) == sorted(batch_ids)
    assert {r.status for r in records.values()} == {BatchStatus.ACCEPTED}
    assert catalog.pending(far) == []
    assert [r.batch_id for r in catalog.window(far, len(batch_ids))] == sorted(batch_ids)
    validated_at = {batch: catalog.get(batch).validated_at for batch in batch_ids}
    ingest_and_accept(99)  # accepting again changes nothing
    assert {batch: catalog.get(batch).validated_at for batch in batch_ids} == validated_at


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """The synthetic feed's helpers, for tests (test modules do not import conftest)."""
    return SimpleNamespace(
        week=synthetic_week,
        week_start=week_start,
        batch_id=batch_id,
        cutoff_after=cutoff_after,
        config_dict=synthetic_config_dict,
        make_project=make_synthetic_project,
        land_weeks=land_weeks,
        context_with_suite=context_with_suite,
        race_to_register_and_accept=race_to_register_and_accept,
        region_effect=dict(REGION_EFFECT),
        flights_config=FLIGHTS_CONFIG,
    )


@pytest.fixture
def synthetic_project(tmp_path: Path) -> Callable[..., SyntheticProject]:
    """Factory: ``synthetic_project(task=..., estimator="linear"|"xgboost", ...)`` -> a fresh project.

    Each call writes its own folder under ``tmp_path`` (one per name), so a test can make several projects.
    """
    counter = iter(range(1_000))

    def make(name: str = "synthetic_sales", **options: Any) -> SyntheticProject:
        return make_synthetic_project(tmp_path / f"{name}_{next(counter)}", name, **options)

    return make


# -- MLflow -------------------------------------------------------------------------------------------------
def use_local_mlflow(folder: Path, mp: pytest.MonkeyPatch) -> str:
    """Point MLflow at a fresh SQLite store in ``folder``; artifacts go under ``folder`` too (cwd)."""
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # models load without it
    mp.setenv("RETRAINER_CODE_VERSION", "test-code-version")
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mp.chdir(folder)  # the default artifact root of a SQLite store is ./mlruns
    mlflow.set_tracking_uri(uri)
    return uri


def reset_mlflow() -> None:
    """Forget the tracking URI and active experiment cached by the mlflow module."""
    if "mlflow" not in sys.modules:
        return
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None clears the cached URI
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None and hasattr(fluent, "_active_experiment_id"):
        fluent._active_experiment_id = None


@pytest.fixture
def mlflow_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real local MLflow tracking store and registry (SQLite), no server; yields its URI."""
    uri = use_local_mlflow(tmp_path / "mlflow", monkeypatch)
    yield uri
    reset_mlflow()


@pytest.fixture
def tracking(mlflow_tracking: str) -> Any:
    """The ``mlflow_tracking`` store as the :class:`~retrainer.tracking.Tracking` steps are handed."""
    from retrainer.tracking import Tracking

    return Tracking(mlflow_tracking)


@pytest.fixture(scope="module")
def module_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like ``mlflow_tracking``, shared by the tests of one module (creating a store costs seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        uri = use_local_mlflow(tmp_path_factory.mktemp("mlflow"), mp)
        yield uri
        reset_mlflow()


# -- S3 (moto) ----------------------------------------------------------------------------------------------
S3_BUCKET = "retrainer-test"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 with one bucket; storage's cached boto3 client is rebuilt inside the mock."""
    from moto import mock_aws

    from retrainer import storage

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    storage._s3_client.cache_clear()
    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=S3_BUCKET)
        yield client
    storage._s3_client.cache_clear()


@pytest.fixture
def s3_bucket(s3: Any) -> str:
    """The URI of the moto bucket (``s3://retrainer-test``)."""
    return f"s3://{S3_BUCKET}"
