"""Train: a candidate on the newest accepted batches, logged to MLflow; and which batches are new to training."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer import locks, trusted_models
from retrainer.catalog import BatchRecord, Catalog, CatalogError
from retrainer.steps.common import (
    NO_NEW_DATA,
    TAG,
    NothingToTrainError,
    StepResult,
    code_version,
    parse_cutoff,
)

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)


class TrainingResult(StepResult):
    """The candidate a trainer logged (what comes back from any training backend).

    Attributes:
        run_id: The candidate's MLflow run.
        model_uri: The logged model.
        window: Batch ids it was trained on, oldest first.
        holdout_start: Timestamp from which rows were held out for evaluation.
        train_rows: Rows it was trained on.
        holdout_rows: Rows held out.
        train_metrics: Its metrics on the training rows.
    """

    run_id: str
    model_uri: str
    window: list[str]
    holdout_start: str
    train_rows: int
    holdout_rows: int
    train_metrics: dict[str, float]


def training_window(
    config: ProjectConfig,
    cutoff: str | datetime | None,
    window_batches: int | None = None,
    require_new_data: list[str] | None = None,
) -> list[BatchRecord]:
    """The accepted batches a candidate of this cycle trains on, newest last.

    Raises:
        NothingToTrainError: ``require_new_data`` is an empty list (the cycle has no new data).
        CatalogError: No accepted batch ended by the cutoff.
    """
    if require_new_data is not None and not require_new_data:
        raise NothingToTrainError(f"{NO_NEW_DATA} in this cycle (use force to retrain anyway)")
    records = Catalog(config).window(parse_cutoff(cutoff), window_batches or config.window.batches)
    if not records:
        raise CatalogError(f"no accepted batch ended by {parse_cutoff(cutoff).isoformat()}: nothing to train on")
    return records


def untrained_batches(
    config: ProjectConfig, tracking: Tracking, cutoff: str | datetime | None, window_batches: int | None = None
) -> list[str]:
    """Accepted batches of the cycle's window that no earlier candidate was trained on: the cycle's new data.

    This, not "validated in this run", decides whether a weekly cycle retrains, so a batch validated earlier
    (by the drift monitor, or a run that failed later) still counts as new until a candidate used it. One
    registry query per batch of the window: the cost does not grow with the project's history.
    """
    window = Catalog(config).window(parse_cutoff(cutoff), window_batches or config.window.batches)
    if not window:
        return []
    with tracking.active():
        client = tracking.client()
        experiment = client.get_experiment_by_name(config.name)
        if experiment is None:
            return [r.batch_id for r in window]
        return [r.batch_id for r in window if not _trained_on(client, experiment.experiment_id, r.batch_id)]


def _trained_on(client: Any, experiment_id: str, batch_id: str) -> bool:
    """Whether a finished candidate run of the experiment has ``batch_id`` in its window."""
    # A trainer killed mid-run (e.g. for memory) leaves a run that never finished: its batches are new.
    return next(candidate_runs_trained_on(client, experiment_id, batch_id, finished_only=True), None) is not None


def candidate_runs_trained_on(
    client: Any, experiment_id: str, batch_id: str, *, finished_only: bool = False
) -> Iterator[Any]:
    """Candidate runs of the experiment whose training window holds ``batch_id``, a page at a time."""
    query = f"tags.`{TAG}kind` = 'candidate'"
    if finished_only:
        query += " and attributes.status = 'FINISHED'"
    if "'" not in batch_id:  # LIKE narrows the search; '_' and '%' in ids are wildcards, so check each hit
        query += f" and tags.`{TAG}window` LIKE '%\"{batch_id}\"%'"
    page_token = None
    while True:
        runs = client.search_runs([experiment_id], filter_string=query, max_results=50, page_token=page_token)
        yield from (run for run in runs if batch_id in json.loads(run.data.tags.get(f"{TAG}window", "[]")))
        page_token = runs.token
        if not page_token:
            return


def _pip_requirements(config: ProjectConfig) -> list[str]:
    """What loading the logged pipeline needs: scikit-learn, skops (its format), pandas, and the estimator's
    own distribution (e.g. xgboost), each pinned to the version it was trained with."""
    from importlib.metadata import packages_distributions, version

    names = ["scikit-learn", "skops", "pandas", "numpy", "scipy"]
    root = config.estimator_class.split(".", 1)[0]
    names += [d for d in packages_distributions().get(root, []) if d not in names]
    return [f"{name}=={version(name)}" for name in names]


def _signature(config: ProjectConfig, sample: Any, predictions: Any) -> Any:
    """The model signature from the project schema (not from a sample, whose missing values hide types)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    columns = [ColSpec("double", name) for name in config.numeric_features]
    columns += [ColSpec("string", name, required=False) for name in config.categorical_features]
    order = {name: i for i, name in enumerate(config.features)}
    inputs = Schema(sorted(columns, key=lambda c: order[c.name]))
    return ModelSignature(inputs=inputs, outputs=infer_signature(sample, predictions).outputs)


def _trusted_types(model: Any) -> list[str]:
    """The types skops must trust to load this pipeline: exactly those it contains, nothing more."""
    skops_io = trusted_models.skops()
    return skops_io.get_untrusted_types(data=skops_io.dumps(model))


def train(
    config: ProjectConfig,
    tracking: Tracking,
    cutoff: str | datetime | None,
    cycle_id: str,
    *,
    trigger: str = "manual",
    window_batches: int | None = None,
    max_train_rows: int | None = None,
    require_new_data: list[str] | None = None,
    lease: str | None = None,
) -> TrainingResult:
    """Train a candidate on the newest accepted batches up to the cutoff and log it to MLflow.

    The newest ``holdout.fraction`` of the window's rows (by timestamp) are held out for evaluation. The run
    records parameters, training metrics, the model (one pipeline with its preprocessing, a signature and
    explicit pip requirements), the window's batch ids and content hashes, the code version and the config.

    Args:
        config: The project.
        tracking: The MLflow server.
        cutoff: Only batches whose period ended by then are used.
        cycle_id: Identifies the cycle in run names and tags.
        trigger: Why the cycle runs (``schedule``, ``manual``, ``backfill``, ``drift``...), recorded as a tag.
        window_batches: Override of ``window.batches``.
        max_train_rows: Train on a seeded sample of at most this many rows (for experiments).
        require_new_data: Accepted batch ids of this cycle; when given and empty, raise instead of retraining.
        lease: The training lease its launcher holds for this trainer (:func:`retrainer.training.launcher_lease`:
            a container cannot write the data root); None: the trainer holds its own while its run is open.

    Raises:
        NothingToTrainError: ``require_new_data`` is an empty list.
        CatalogError: There are no accepted batches to train on.
        ModelingError: The window is too small for the holdout rule, or the estimator fails.
    """
    from retrainer import modeling, training

    try:  # what an earlier trainer left half-done is recorded before this one starts
        training.close_abandoned_candidates(config, tracking, lease)
    except Exception as error:  # training needs the same registry: its own errors say more
        log.warning("could not check for abandoned candidate runs: %s", error)
    catalog = Catalog(config)
    records = training_window(config, cutoff, window_batches, require_new_data)
    split = modeling.split_holdout(catalog.load(records, columns=modeling.model_columns(config)), config)
    holdout_rows, holdout_start, train_rows = len(split.holdout), split.holdout_start, split.train
    del split  # the held-out rows are evaluate's: not held in memory while training
    if max_train_rows is not None and len(train_rows) > max_train_rows:
        train_rows = train_rows.sample(n=max_train_rows, random_state=config.estimator.seed)
    trained_rows = len(train_rows)
    features, target = modeling.prepare(train_rows, config)  # once: fitting, scoring and the signature share it
    del train_rows
    fitted = modeling.fit_features(features, target, config)
    if config.training.device == "cuda" and not fitted.device.startswith("cuda"):
        log.warning("training.device is cuda but xgboost found no GPU here: the model was trained on the CPU")
    model = fitted.pipeline
    predictions = modeling.predict_for_metric(model, features, config.task)
    train_metrics = modeling.compute_metrics(target, predictions, config.task)
    window = [r.batch_id for r in records]
    with tracking.active():
        info, run_id = _log_candidate(
            config,
            cycle_id=cycle_id,
            lease=lease,
            tags={
                f"{TAG}kind": "candidate",
                f"{TAG}cycle_id": cycle_id,
                f"{TAG}trigger": trigger,
                f"{TAG}code_version": code_version(),
                f"{TAG}trained_on": fitted.device,
                **{f"{TAG}{key}": value for key, value in training.provenance().items() if value},
                f"{TAG}window": json.dumps(window),
                f"{TAG}holdout_start": holdout_start,
                f"{TAG}cutoff": parse_cutoff(cutoff).isoformat(),
            },
            params={
                "estimator": config.estimator_class,
                "seed": config.estimator.seed,
                "window_batches": len(records),
                "holdout_fraction": config.holdout.fraction,
                "train_rows": trained_rows,
                "holdout_rows": holdout_rows,
                "max_train_rows": max_train_rows,
                "device": config.training.device,
                **{f"estimator.{k}": v for k, v in config.estimator.params.items()},
            },
            metrics={f"train_{name}": value for name, value in train_metrics.items()},
            records=records,
            model=model,
            sample=features.head(5),
        )
    return TrainingResult(
        run_id=run_id,
        model_uri=info.model_uri,
        window=window,
        holdout_start=holdout_start,
        train_rows=trained_rows,
        holdout_rows=holdout_rows,
        train_metrics=train_metrics,
    )


def _log_candidate(
    config: ProjectConfig,
    *,
    cycle_id: str,
    lease: str | None,
    tags: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    records: list[BatchRecord],
    model: Any,
    sample: Any,
) -> tuple[Any, str]:
    """Log the candidate run: tags, parameters, metrics, the window's batches, the config and the model."""
    import mlflow

    from retrainer import experiments, modeling, training

    experiments.use_experiment(config)
    # The lease says "this run is being logged" to the next train step: released (or dead) means abandoned.
    attempt = lease or secrets.token_hex(8)
    held = (
        contextlib.nullcontext()
        if lease
        else locks.held(
            training.training_lease(config, attempt),
            locks.default_owner(f"training of cycle {cycle_id}"),
            ttl=training.lease_ttl(config),
            wait_s=0,
        )
    )
    name = experiments.run_name([record.batch_id for record in records], "candidate")
    with held, mlflow.start_run(run_name=name, tags={training.LEASE_TAG: attempt}) as run:
        mlflow.set_tags(tags)
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(
            {
                "batches": [
                    {"batch_id": r.batch_id, "sha256": r.sha256, "rows": r.rows, "uri": r.uri, "labels": r.labels}
                    for r in records
                ]
            },
            "data/training_batches.json",
        )
        mlflow.log_dict(config.model_dump(mode="json", by_alias=True), "config/project.json")
        with _without_pickle_refusal_warning():
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                skops_trusted_types=_trusted_types(model),
                signature=_signature(config, sample, modeling.predict_for_metric(model, sample, config.task)),
                input_example=sample,
                pip_requirements=_pip_requirements(config),
            )
        mlflow.set_tag(f"{TAG}model_uri", info.model_uri)
        mlflow.set_tag(trusted_models.SHA256_TAG, _logged_digest(info.model_uri))
    return info, run.info.run_id


class _PickleRefusal(logging.Filter):
    """Drops MLflow's warning that it could not check the input example by loading the model: the trainer
    refuses to load models (no pickle loading in the platform's processes), and the serving check
    (``steps/serving.py``) loads the candidate in a process of its own once its digest matches."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Deserializing this model is disallowed" not in record.getMessage()


@contextlib.contextmanager
def _without_pickle_refusal_warning() -> Iterator[None]:
    logger, refusal = logging.getLogger("mlflow.models.model"), _PickleRefusal()
    logger.addFilter(refusal)
    try:
        yield
    finally:
        logger.removeFilter(refusal)


def _logged_digest(model_uri: str) -> str:
    """The digest of the model as the store holds it, checked whenever it is loaded (retrainer.trusted_models)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="retrainer-logged-") as folder:
        return trusted_models.digest(
            Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        )
