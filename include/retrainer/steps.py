"""The steps of a retraining cycle: ingest, validate, drift, train, evaluate, promote, record.

Each step takes a project configuration and small values (batch ids, run ids, timestamps) and returns a small
JSON-safe dict, so that the same function serves the CLI, an Airflow task (through XCom) and a plain Python
loop. Data moves through the batch store and MLflow, never through return values.

MLflow is reached through ``MLFLOW_TRACKING_URI`` (or ``mlflow.set_tracking_uri`` by the caller).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer import storage
from retrainer.catalog import BatchRecord, BatchStatus, Catalog, CatalogError
from retrainer.promotion import decide

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig

log = logging.getLogger(__name__)

CHAMPION = "champion"
TAG = "retrainer."  # prefix of every tag the platform writes to runs and model versions


class BatchRejectedError(RuntimeError):
    """One or more batches failed validation and were quarantined; the cycle must stop before training."""


class NothingToTrainError(RuntimeError):
    """The cycle has no new accepted data and was not forced."""


# -- helpers ------------------------------------------------------------------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True
    ).stdout.strip()


def code_version() -> str:
    """The platform's code version: ``RETRAINER_CODE_VERSION``, else the git commit, else the package version."""
    if version := os.environ.get("RETRAINER_CODE_VERSION"):
        return version
    try:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "--short=12", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version as package_version

        return package_version("retrainer")


def safe_id(value: str) -> str:
    """A run id or label made safe for file names and object keys."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value).strip("_")


def parse_cutoff(value: str | datetime | None) -> datetime:
    """A cycle's cutoff as an aware UTC datetime (now when None)."""
    if value is None:
        return datetime.now(UTC)
    try:
        ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cutoff {value!r} is not an ISO time like 2013-01-14T03:00:00Z") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def champion_version(config: ProjectConfig) -> Any | None:
    """The model version carrying the ``champion`` alias, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        return client.get_model_version_by_alias(config.model_name, CHAMPION)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise


def _window_of_run(run_id: str) -> list[str]:
    run = _client().get_run(run_id)
    return json.loads(run.data.tags.get(f"{TAG}window", "[]"))


def _set_experiment(config: ProjectConfig) -> None:
    import mlflow

    mlflow.set_experiment(config.name)


# -- alert policy -------------------------------------------------------------------------------------------
def gate_alerts(
    config: ProjectConfig, alerts: list[dict[str, Any]], cycle_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """Decide whether the alerts that started a run may retrain now, and record every alert's outcome.

    A retrain started by an alert is suppressed when the last alert-triggered retrain of the project happened
    less than ``alerts.cooldown_minutes`` ago (read from the cycle records). The outcome of each alert,
    triggered or suppressed and why, is written to ``reports/alerts/<cycle_id>.json``.

    Returns:
        ``decision`` (``triggered`` or ``suppressed``), ``reason`` and the ``alerts``.
    """
    now = now or datetime.now(UTC)
    cooldown = timedelta(minutes=config.alerts.cooldown_minutes)
    last = None
    catalog = Catalog(config)
    for uri in storage.list_files(storage.join(catalog.reports, "cycles"), "*.json"):
        record = json.loads(storage.read_bytes(uri))
        if record.get("trigger") == "drift_alert" and record.get("training"):
            when = parse_cutoff(record["recorded_at"])
            last = when if last is None or when > last else last
    if last is not None and now - last < cooldown:
        decision = "suppressed"
        reason = (
            f"cooldown: the last alert-triggered retrain ended at {last.isoformat(timespec='seconds')}, "
            f"less than {config.alerts.cooldown_minutes:g} min ago"
        )
    else:
        decision, reason = "triggered", f"{len(alerts)} alert(s) start one retrain"
    outcome = {"cycle_id": cycle_id, "decided_at": now.isoformat(timespec="seconds"), "decision": decision}
    outcome |= {"reason": reason, "alerts": alerts}
    target = storage.join(catalog.reports, "alerts", f"{safe_id(cycle_id)}.json")
    storage.write_bytes(target, json.dumps(outcome, indent=2, default=str).encode())
    return outcome


# -- ingest -------------------------------------------------------------------------------------------------
def ingest(config: ProjectConfig, cutoff: str | datetime | None = None) -> dict[str, Any]:
    """Register newly landed batches and list those a cycle at ``cutoff`` must process.

    Returns:
        ``registered`` (new batch ids), ``quarantined`` (unreadable files quarantined on arrival),
        ``pending`` (batch ids awaiting validation whose period ended by the cutoff, oldest first) and
        ``champion_version`` (the champion when the cycle started, or None).
    """
    catalog = Catalog(config)
    new = catalog.register_new()
    pending = catalog.pending(parse_cutoff(cutoff))
    champion = champion_version(config)
    return {
        "registered": [r.batch_id for r in new],
        "quarantined": [r.batch_id for r in new if r.status is BatchStatus.QUARANTINED],
        "pending": [r.batch_id for r in pending],
        # The champion when the cycle started: drift compares against its data even if promote runs first.
        "champion_version": None if champion is None else str(champion.version),
    }


# -- validate -----------------------------------------------------------------------------------------------
def validate(
    config: ProjectConfig,
    batch_ids: list[str],
    context_root: Path | None = None,
    build_docs: bool = True,
    quarantined_on_arrival: list[str] | None = None,
) -> dict[str, Any]:
    """Validate batches with the project's Great Expectations suite; fail closed.

    Every batch is validated. Passing batches are accepted; failing ones, and batches whose file changed or
    vanished since it landed, are moved to quarantine with a report. If any failed (or ingest quarantined
    unreadable files, ``quarantined_on_arrival``), :class:`BatchRejectedError` is raised after all were
    handled, naming what failed, so that the cycle stops before training and the champion is untouched.
    Storage errors (e.g. S3 unreachable) propagate: they are transient, and the task retries.

    Returns:
        ``accepted`` batch ids and one ``summaries`` line per batch.

    Raises:
        BatchRejectedError: At least one batch failed validation.
    """
    from retrainer.validation import validate_frame

    catalog = Catalog(config)
    accepted, rejected, summaries = [], [], {}
    for batch_id in quarantined_on_arrival or []:
        rejected.append(batch_id)
        summaries[batch_id] = f"batch {batch_id} unreadable: {catalog.get(batch_id).validation.get('error', '')}"
    for batch_id in batch_ids:
        record = catalog.get(batch_id)
        if record.status is BatchStatus.ACCEPTED:
            accepted.append(batch_id)
            summaries[batch_id] = "already accepted"
            continue
        if record.status is BatchStatus.QUARANTINED:
            rejected.append(batch_id)
            summaries[batch_id] = f"already quarantined: {record.validation.get('summary', '')}"
            continue
        try:
            frame = catalog.load([record])
        except CatalogError as error:
            summaries[batch_id] = f"batch {batch_id} not validated: {error}"
            catalog.quarantine_batch(batch_id, {"batch_id": batch_id, "success": False, "error": str(error)})
            rejected.append(batch_id)
            continue
        outcome = validate_frame(frame, config.validation.suite, batch_id, context_root, build_docs)
        summaries[batch_id] = outcome.summary_line()
        log.info(outcome.summary_line())
        details = {"success": outcome.success, "summary": outcome.summary_line(), "data_docs": outcome.data_docs}
        if outcome.success:
            catalog.accept(batch_id, details)
            accepted.append(batch_id)
        else:
            catalog.quarantine_batch(batch_id, {**details, **outcome.to_dict()})
            rejected.append(batch_id)
    if rejected:
        lines = "; ".join(summaries[b] for b in rejected)
        raise BatchRejectedError(f"quarantined {', '.join(rejected)}, nothing trained: {lines}")
    return {"accepted": accepted, "summaries": summaries}


# -- drift --------------------------------------------------------------------------------------------------
def drift(
    config: ProjectConfig, batch_ids: list[str], cycle_id: str, reference_version: str | None = None
) -> dict[str, Any]:
    """Compare the cycle's new batches with the data the champion was trained on (Evidently).

    The HTML and JSON reports and a machine-readable summary go to ``reports/<cycle>/drift/`` in the batch
    store and to an MLflow run tagged ``retrainer.kind=drift``.

    Args:
        config: The project.
        batch_ids: The cycle's accepted batches.
        cycle_id: Label of the reports.
        reference_version: The champion version to compare with (recorded when the cycle started); None
            looks up the current champion.

    Returns:
        ``status`` (``computed``, ``no_champion``, ``no_new_data``, ``no_reference``, ``failed``), and when
        computed the share of drifted columns, whether the drift rule fired, the summary line and report URIs.
    """
    if not batch_ids:
        return {"status": "no_new_data", "summary": "no new batch to compare"}
    if reference_version is not None:
        champion = _client().get_model_version(config.model_name, reference_version)
    else:
        champion = champion_version(config)
    if champion is None:
        return {"status": "no_champion", "summary": "no champion yet: nothing to compare with"}
    import mlflow

    from retrainer.drift import compute_drift

    catalog = Catalog(config)
    try:
        reference_ids = _window_of_run(champion.run_id)
        reference = catalog.load([catalog.get(b) for b in reference_ids])
    except CatalogError as error:
        return {"status": "no_reference", "summary": f"reference data of v{champion.version} unavailable: {error}"}
    current = catalog.load([catalog.get(b) for b in batch_ids])
    numeric = list(config.numeric_features)
    categorical = list(config.categorical_features)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = compute_drift(current, reference, numeric, categorical, config.drift, Path(tmp))
        except ValueError as error:
            # Drift informs, it does not gate this cycle: report why it could not be measured.
            log.warning("drift not computed: %s", error)
            return {"status": "failed", "summary": f"drift not computed: {error}"}
        target = storage.join(catalog.reports, safe_id(cycle_id), "drift")
        uris = storage.upload_folder(Path(tmp), target)
        _set_experiment(config)
        summary = result.summary
        with mlflow.start_run(run_name=f"{cycle_id} drift") as run:
            mlflow.set_tags(
                {
                    f"{TAG}kind": "drift",
                    f"{TAG}cycle_id": cycle_id,
                    f"{TAG}batches": json.dumps(batch_ids),
                    f"{TAG}reference_version": str(champion.version),
                    f"{TAG}drift_detected": str(summary.drift_detected).lower(),
                }
            )
            mlflow.log_metrics(
                {"share_drifted": summary.share_drifted, "drifted_columns": float(summary.drifted_count)}
            )
            mlflow.log_artifacts(tmp, artifact_path="drift")
    return {
        "status": "computed",
        "share_drifted": summary.share_drifted,
        "drift_detected": summary.drift_detected,
        "summary": summary.summary_line(),
        "reference_version": str(champion.version),
        "report_uris": uris,
        "mlflow_run_id": run.info.run_id,
    }


def untrained_batches(
    config: ProjectConfig, cutoff: str | datetime | None, window_batches: int | None = None
) -> list[str]:
    """Accepted batches of the cycle's window that no earlier candidate was trained on: the cycle's new data.

    This, not "validated in this run", decides whether a weekly cycle retrains, so a batch validated earlier
    (by the drift monitor, or a run that failed later) still counts as new until a candidate used it.
    """
    import mlflow

    window = Catalog(config).window(parse_cutoff(cutoff), window_batches or config.window.batches)
    experiment = mlflow.get_experiment_by_name(config.name)
    used: set[str] = set()
    if experiment is not None:
        runs = mlflow.search_runs(
            [experiment.experiment_id],
            # A trainer killed mid-run (e.g. for memory) leaves a run that never finished: its batches are new.
            filter_string=f"tags.`{TAG}kind` = 'candidate' and attributes.status = 'FINISHED'",
            output_format="list",
        )
        for run in runs:
            used.update(json.loads(run.data.tags.get(f"{TAG}window", "[]")))
    return [r.batch_id for r in window if r.batch_id not in used]


# -- concept drift ------------------------------------------------------------------------------------------
def concept_drift(config: ProjectConfig) -> dict[str, Any]:
    """Attach newly arrived late labels to their batches and check whether the champion got worse on them.

    The champion's primary metric on the rows that just got labels is compared with its baseline, its score on
    the held-out rows when it was evaluated (``holdout_<metric>`` of its candidate run). A relative degradation
    beyond ``concept_drift.max_degradation`` is concept drift. Each check is written to
    ``reports/concept/<batch>.json``; label files that cannot be used are rejected with the reason.

    Returns:
        ``registered`` (batch ids that got labels), ``waiting`` (labels of batches not validated yet),
        ``rejected`` (file and reason), ``checks`` (per batch: rows, score, baseline, degradation, degraded),
        ``drift_detected`` and a one-line ``summary``.
    """
    from retrainer import modeling
    from retrainer.promotion import relative_improvement

    catalog = Catalog(config)
    outcome = catalog.register_labels()
    champion = champion_version(config)
    metric, limit = config.metric.name, config.concept_drift.max_degradation
    checks = []
    for record in outcome["registered"]:
        rows = catalog.late_labelled_rows(record)
        check: dict[str, Any] = {
            "batch_id": record.batch_id,
            "rows": len(rows),
            "metric": metric,
            "champion_version": None if champion is None else str(champion.version),
            "max_degradation": limit,
            "degraded": False,
        }
        if champion is None:
            check["note"] = "no champion yet: nothing to check"
        elif len(rows) < config.concept_drift.min_rows:
            check["note"] = (
                f"only {len(rows)} newly labelled rows (concept_drift.min_rows is {config.concept_drift.min_rows})"
            )
        else:
            baseline = _client().get_run(champion.run_id).data.metrics.get(f"holdout_{metric}")
            score = modeling.score(load_model(f"models:/{config.model_name}/{champion.version}"), rows, config)
            if baseline is None or metric not in score:
                check["note"] = f"{metric} of v{champion.version} cannot be compared on these rows"
            else:
                degradation = -relative_improvement(score[metric], baseline, config.metric.greater_is_better)
                check.update(
                    baseline=baseline, score=score[metric], degradation=degradation, degraded=degradation > limit
                )
                check["note"] = (
                    f"{metric} of v{champion.version} {score[metric]:.4g} on {len(rows)} late-labelled rows vs "
                    f"{baseline:.4g} held out: {degradation:+.1%} worse (limit {limit:.0%})"
                )
        uri = storage.join(catalog.reports, "concept", f"{record.batch_id}.json")
        storage.write_bytes(uri, json.dumps({**check, "labels": record.labels}, indent=2).encode())
        checks.append({**check, "report_uri": uri})
    degraded = [c for c in checks if c["degraded"]]
    parts = [f"{c['batch_id']}: {c['note']}" for c in checks]
    parts += [f"labels {name} rejected: {error}" for name, error in outcome["rejected"]]
    if outcome["waiting"]:
        parts.append(f"labels waiting for their batch to be validated: {', '.join(outcome['waiting'])}")
    return {
        "registered": [r.batch_id for r in outcome["registered"]],
        "waiting": outcome["waiting"],
        "rejected": [list(pair) for pair in outcome["rejected"]],
        "checks": checks,
        "drift_detected": bool(degraded),
        "summary": ("CONCEPT DRIFT: " if degraded else "") + ("; ".join(parts) or "no new labels"),
    }


# -- train --------------------------------------------------------------------------------------------------
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
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def load_model(uri: str) -> Any:
    """Load a model of this platform's registry as a scikit-learn pipeline.

    MLflow refuses to deserialise any model unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is true, and
    loading a model can run code from its artifact. The platform turns it on for this process (unless the
    environment already decides) and only ever loads models from its own registry, which must therefore be
    writable only by trusted users.
    """
    import mlflow

    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    return mlflow.sklearn.load_model(uri)


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
        raise NothingToTrainError("no new accepted batch in this cycle (use force to retrain anyway)")
    records = Catalog(config).window(parse_cutoff(cutoff), window_batches or config.window.batches)
    if not records:
        raise CatalogError(f"no accepted batch ended by {parse_cutoff(cutoff).isoformat()}: nothing to train on")
    return records


def train(
    config: ProjectConfig,
    cutoff: str | datetime | None,
    cycle_id: str,
    *,
    trigger: str = "manual",
    window_batches: int | None = None,
    max_train_rows: int | None = None,
    require_new_data: list[str] | None = None,
) -> dict[str, Any]:
    """Train a candidate on the newest accepted batches up to the cutoff and log it to MLflow.

    The newest ``holdout.fraction`` of the window's rows (by timestamp) are held out for evaluation. The run
    records parameters, training metrics, the model (one pipeline with its preprocessing, a signature and
    explicit pip requirements), the window's batch ids and content hashes, the code version and the config.

    Args:
        config: The project.
        cutoff: Only batches whose period ended by then are used.
        cycle_id: Identifies the cycle in run names and tags.
        trigger: Why the cycle runs (``schedule``, ``manual``, ``backfill``, ``drift``...), recorded as a tag.
        window_batches: Override of ``window.batches``.
        max_train_rows: Train on a seeded sample of at most this many rows (for experiments).
        require_new_data: Accepted batch ids of this cycle; when given and empty, raise instead of retraining.

    Returns:
        ``run_id``, ``model_uri``, ``window``, ``holdout_start``, row counts and training metrics.

    Raises:
        NothingToTrainError: ``require_new_data`` is an empty list.
        CatalogError: There are no accepted batches to train on.
        ModelingError: The window is too small for the holdout rule, or the estimator fails.
    """
    import mlflow

    from retrainer import modeling, training

    catalog = Catalog(config)
    records = training_window(config, cutoff, window_batches, require_new_data)
    split = modeling.split_holdout(catalog.load(records), config)
    train_rows = split.train
    if max_train_rows is not None and len(train_rows) > max_train_rows:
        train_rows = train_rows.sample(n=max_train_rows, random_state=config.estimator.seed)
    fitted = modeling.fit_on_device(train_rows, config)
    if config.training.device == "cuda" and not fitted.device.startswith("cuda"):
        log.warning("training.device is cuda but xgboost found no GPU here: the model was trained on the CPU")
    model = fitted.pipeline
    features, _ = modeling.prepare(train_rows, config)
    train_metrics = modeling.score(model, train_rows, config)

    _set_experiment(config)
    window = [r.batch_id for r in records]
    with mlflow.start_run(run_name=f"{cycle_id} candidate") as run:
        mlflow.set_tags(
            {
                f"{TAG}kind": "candidate",
                f"{TAG}cycle_id": cycle_id,
                f"{TAG}trigger": trigger,
                f"{TAG}code_version": code_version(),
                f"{TAG}trained_on": fitted.device,
                **{f"{TAG}{key}": value for key, value in training.provenance().items() if value},
                f"{TAG}window": json.dumps(window),
                f"{TAG}holdout_start": split.holdout_start,
                f"{TAG}cutoff": parse_cutoff(cutoff).isoformat(),
            }
        )
        mlflow.log_params(
            {
                "estimator": config.estimator_class,
                "seed": config.estimator.seed,
                "window_batches": len(records),
                "holdout_fraction": config.holdout.fraction,
                "train_rows": len(train_rows),
                "holdout_rows": len(split.holdout),
                "max_train_rows": max_train_rows,
                "device": config.training.device,
                **{f"estimator.{k}": v for k, v in config.estimator.params.items()},
            }
        )
        mlflow.log_metrics({f"train_{name}": value for name, value in train_metrics.items()})
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
        sample = features.head(5)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            skops_trusted_types=_trusted_types(model),
            signature=_signature(config, sample, modeling.predict_for_metric(model, sample, config.task)),
            input_example=sample,
            pip_requirements=_pip_requirements(config),
        )
        mlflow.set_tag(f"{TAG}model_uri", info.model_uri)
    return {
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "window": window,
        "holdout_start": split.holdout_start,
        "train_rows": len(train_rows),
        "holdout_rows": len(split.holdout),
        "train_metrics": train_metrics,
    }


# -- evaluate -----------------------------------------------------------------------------------------------
def evaluate(config: ProjectConfig, run_id: str) -> dict[str, Any]:
    """Score the candidate of ``run_id`` and the current champion on the same held-out rows.

    The held-out rows are rebuilt from the run's recorded window (hash-checked) and split point.

    Returns:
        ``metric``, ``candidate`` and ``champion`` scores (champion None when there is none), the champion's
        version and both models' full metric sets.
    """
    import mlflow

    from retrainer import modeling

    client = _client()
    tags = client.get_run(run_id).data.tags
    if tags.get(f"{TAG}kind") != "candidate":
        raise ValueError(f"MLflow run {run_id} is not a candidate run of the train step")
    catalog = Catalog(config)
    window = json.loads(tags[f"{TAG}window"])
    frame = catalog.load([catalog.get(b) for b in window])
    holdout_start = tags[f"{TAG}holdout_start"]
    holdout = modeling.split_holdout(frame, config, holdout_start=holdout_start).holdout
    candidate_metrics = modeling.score(load_model(tags[f"{TAG}model_uri"]), holdout, config)
    champion = champion_version(config)
    champion_metrics = None
    if champion is not None:
        trained_until = client.get_run(champion.run_id).data.tags.get(f"{TAG}holdout_start", "")
        if trained_until and parse_cutoff(trained_until) > parse_cutoff(holdout_start):
            # e.g. a backfill of an old week: the champion trained on part of these rows and would be favoured.
            raise ValueError(
                f"champion v{champion.version} was trained on rows up to {trained_until}, after this cycle's "
                f"holdout starts ({holdout_start}): the comparison would not be fair; use a later cutoff"
            )
        champion_model = load_model(f"models:/{config.model_name}/{champion.version}")
        champion_metrics = modeling.score(champion_model, holdout, config)
    metric = config.metric.name
    for label, scores in (("candidate", candidate_metrics), ("champion", champion_metrics)):
        if scores is not None and metric not in scores:
            raise modeling.ModelingError(
                f"{metric} of the {label} cannot be computed on the {len(holdout)} held-out rows "
                "(for roc_auc both classes must be present): widen the window or the holdout"
            )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"holdout_{k}": v for k, v in candidate_metrics.items()})
        if champion_metrics is not None:
            mlflow.log_metrics({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
            mlflow.set_tag(f"{TAG}champion_version", str(champion.version))
    return {
        "metric": metric,
        "candidate": candidate_metrics[metric],
        "champion": None if champion_metrics is None else champion_metrics[metric],
        "champion_version": None if champion is None else str(champion.version),
        "holdout_rows": len(holdout),
        "candidate_metrics": candidate_metrics,
        "champion_metrics": champion_metrics,
    }


# -- promote ------------------------------------------------------------------------------------------------
def promote(
    config: ProjectConfig, run_id: str, evaluation: dict[str, Any], dry_run: bool = False
) -> dict[str, Any]:
    """Register the candidate as a new model version and move ``@champion`` to it only if it wins.

    The decision (verdict, reason, both scores, margin) is written as tags on the version and on the run, and
    as the run artifact ``decision/decision.json``. A rejected version stays in the registry, tagged with why.
    With ``dry_run`` the decision is computed and logged on the run but nothing is registered.

    Returns:
        The decision as a dict, with the new ``version`` (None on a dry run).
    """
    import mlflow

    client = _client()
    current = champion_version(config)
    current_version = None if current is None else str(current.version)
    # A retry after a partial promote reuses the version registered for this run instead of adding another.
    registered = (
        [] if dry_run else client.search_model_versions(f"name='{config.model_name}' and run_id='{run_id}'")
    )
    if registered and current_version == str(registered[0].version):
        current_version = evaluation.get("champion_version")  # the alias already moved in the earlier try
    if current_version != evaluation.get("champion_version"):
        raise RuntimeError(
            f"the champion moved from v{evaluation.get('champion_version')} to v{current_version} during the "
            "cycle; evaluate again before promoting"
        )
    decision = decide(config, evaluation["candidate"], evaluation["champion"], evaluation["champion_version"])
    run = client.get_run(run_id)
    record: dict[str, Any] = {
        **decision.to_dict(),
        "run_id": run_id,
        "model": config.model_name,
        "cycle_id": run.data.tags.get(f"{TAG}cycle_id"),
        "dry_run": dry_run,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": None,
    }
    tags = {
        f"{TAG}decision": decision.verdict.value if not dry_run else f"dry_run:{decision.verdict.value}",
        f"{TAG}reason": decision.reason,
        f"{TAG}candidate_{decision.metric}": f"{decision.candidate:.6g}",
        f"{TAG}champion_{decision.metric}": "none" if decision.champion is None else f"{decision.champion:.6g}",
        f"{TAG}previous_champion": evaluation.get("champion_version") or "none",
        f"{TAG}cycle_id": record["cycle_id"] or "",
        f"{TAG}code_version": run.data.tags.get(f"{TAG}code_version", ""),
        **{
            f"{TAG}{key}": run.data.tags[f"{TAG}{key}"]
            for key in ("training_backend", "trainer_image", "trainer_image_id", "trained_on")
            if f"{TAG}{key}" in run.data.tags
        },
    }
    if not dry_run:
        if registered:
            version = registered[0]
            for key, value in tags.items():
                client.set_model_version_tag(config.model_name, version.version, key, value)
        else:
            version = mlflow.register_model(run.data.tags[f"{TAG}model_uri"], config.model_name, tags=tags)
        record["version"] = str(version.version)
        client.set_model_version_tag(config.model_name, version.version, f"{TAG}run_id", run_id)
        # Shown in the registry's version list: the decision in words.
        client.update_model_version(
            config.model_name, version.version, description=f"{decision.verdict.value}: {decision.reason}"
        )
        if config.description and not client.get_registered_model(config.model_name).description:
            client.update_registered_model(config.model_name, description=config.description)
        if decision.promoted:
            client.set_registered_model_alias(config.model_name, CHAMPION, version.version)
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags({**tags, f"{TAG}version": record["version"] or "none"})
        mlflow.log_dict(record, "decision/decision.json")
    log.info("%s v%s: %s", decision.verdict.value, record["version"], decision.reason)
    return record


# -- rollback -----------------------------------------------------------------------------------------------
def rollback(
    config: ProjectConfig, to_version: str | None = None, reason: str = "manual rollback"
) -> dict[str, Any]:
    """Move ``@champion`` back: to ``to_version``, or to the champion the current one replaced.

    Both versions are tagged with the rollback, so the registry keeps the whole history.

    Raises:
        RuntimeError: There is no champion, or no earlier champion to go back to.
    """
    client = _client()
    current = champion_version(config)
    if current is None:
        raise RuntimeError(f"{config.model_name} has no champion to roll back")
    target = to_version or current.tags.get(f"{TAG}previous_champion")
    if not target or target == "none":
        raise RuntimeError(
            f"v{current.version} of {config.model_name} replaced no earlier champion; name --to-version"
        )
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(config.model_name, target)
    except MlflowException:
        raise RuntimeError(f"{config.model_name} has no version {target} to roll back to") from None
    when = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_registered_model_alias(config.model_name, CHAMPION, target)
    client.set_model_version_tag(config.model_name, current.version, f"{TAG}rolled_back_at", when)
    client.set_model_version_tag(config.model_name, current.version, f"{TAG}rollback_reason", reason)
    client.set_model_version_tag(config.model_name, target, f"{TAG}restored_at", when)
    client.set_model_version_tag(config.model_name, target, f"{TAG}restore_reason", reason)
    return {
        "model": config.model_name,
        "from_version": str(current.version),
        "to_version": str(target),
        "reason": reason,
    }


# -- record -------------------------------------------------------------------------------------------------
def record_cycle(config: ProjectConfig, cycle_id: str, **parts: Any) -> dict[str, Any]:
    """Write one cycle's outcome to ``reports/cycles/<cycle_id>.json`` (the source of the cycle table).

    Args:
        config: The project.
        cycle_id: The cycle.
        **parts: Whatever the steps returned (``ingest``, ``validation``, ``drift``, ``training``,
            ``evaluation``, ``decision``), None for steps that did not run, plus ``trigger`` and ``error``.
    """
    catalog = Catalog(config)
    ingested = parts.get("ingest") or {}
    batch_ids = [*ingested.get("quarantined", []), *ingested.get("pending", [])]
    batches = {}
    for batch_id in batch_ids:
        try:
            batches[batch_id] = catalog.get(batch_id).status.value
        except CatalogError:
            batches[batch_id] = "unknown"
    record = {"cycle_id": cycle_id, "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"), **parts}
    record["batches"] = batches
    storage.write_bytes(
        storage.join(catalog.reports, "cycles", f"{safe_id(cycle_id)}.json"),
        json.dumps(record, indent=2, default=str).encode(),
    )
    return record


def cycle_table(config: ProjectConfig) -> list[dict[str, Any]]:
    """One row per recorded cycle, oldest first: week, validation, drift share, both scores, decision."""
    catalog = Catalog(config)
    rows = []
    for uri in storage.list_files(storage.join(catalog.reports, "cycles"), "*.json"):
        record = json.loads(storage.read_bytes(uri))
        batches = record.get("batches") or {}
        drift_part = record.get("drift") or {}
        alerts = (record.get("ingest") or {}).get("alerts") or []
        share = drift_part.get("share_drifted")
        if not batches:  # an alert run: the drift monitor validated the batches the alert is about
            for batch_id in (b for alert in alerts for b in alert.get("batch_ids") or []):
                try:
                    batches[batch_id] = catalog.get(batch_id).status.value
                except CatalogError:
                    batches[batch_id] = "unknown"
            shares = [(a.get("drift") or {}).get("share_drifted") for a in alerts]
            share = next((value for value in shares if value is not None), share)
        evaluation = record.get("evaluation") or {}
        decision = record.get("decision") or {}
        if decision:
            outcome = (
                f"{decision.get('verdict')} v{decision.get('version')}"
                if decision.get("version")
                else (f"dry run: {decision.get('verdict')}")
            )
        elif (record.get("gate") or {}).get("decision") == "suppressed":
            outcome = "suppressed: cooldown"
        elif record.get("error"):
            outcome = f"stopped: {record['error'].split(':')[0]}"
        else:
            outcome = "not run"
        rows.append(
            {
                "cycle": record["cycle_id"],
                "trigger": record.get("trigger", ""),
                "week": ", ".join(batches) or "-",
                "validation": ", ".join(sorted(set(batches.values()))) or "-",
                "drift_share": share,
                "champion": evaluation.get("champion"),
                "candidate": evaluation.get("candidate"),
                "decision": outcome,
                "cutoff": record.get("cutoff", ""),
            }
        )
    return sorted(rows, key=lambda r: (r["cutoff"], r["cycle"]))


# -- a whole cycle in one process ---------------------------------------------------------------------------
def run_cycle(
    config: ProjectConfig,
    cutoff: str | datetime | None = None,
    cycle_id: str | None = None,
    *,
    trigger: str = "manual",
    force: bool = False,
    dry_run: bool = False,
    window_batches: int | None = None,
    max_train_rows: int | None = None,
    context_root: Path | None = None,
) -> dict[str, Any]:
    """Run every step in this process, the way the DAG wires them (for the CLI, tests and benchmarks).

    Returns:
        The cycle record, also written to ``reports/cycles/``.
    """
    when = parse_cutoff(cutoff)
    cycle_id = cycle_id or f"{trigger}__{when.strftime('%Y%m%dT%H%M%S')}"
    parts: dict[str, Any] = {"trigger": trigger, "cutoff": when.isoformat()}
    try:
        parts["ingest"] = ingest(config, when)
        ingested = parts["ingest"]
        parts["validation"] = validate(
            config, ingested["pending"], context_root, quarantined_on_arrival=ingested["quarantined"]
        )
        accepted = parts["validation"]["accepted"]
        parts["drift"] = drift(config, accepted, cycle_id, ingested["champion_version"])
        parts["training"] = train(
            config,
            when,
            cycle_id,
            trigger=trigger,
            window_batches=window_batches,
            max_train_rows=max_train_rows,
            require_new_data=None if force else untrained_batches(config, when, window_batches),
        )
        parts["evaluation"] = evaluate(config, parts["training"]["run_id"])
        parts["decision"] = promote(config, parts["training"]["run_id"], parts["evaluation"], dry_run=dry_run)
    except (BatchRejectedError, NothingToTrainError) as error:
        parts["error"] = str(error)
    except Exception as error:
        record_cycle(config, cycle_id, **parts, error=f"{type(error).__name__}: {error}")
        raise
    return record_cycle(config, cycle_id, **parts)
