"""Drift: compare a cycle's new batches with the data the champion was trained on (Evidently)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from retrainer import experiments, storage
from retrainer.catalog import Catalog, CatalogError
from retrainer.steps.common import TAG, StepResult, champion_version, safe_id, window_of_run

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)

DriftStatus = Literal["computed", "no_champion", "no_new_data", "no_reference", "failed"]


class DriftOutcome(StepResult):
    """What the drift step measured.

    Attributes:
        status: ``computed``, or why not: ``no_champion``, ``no_new_data``, ``no_reference``, ``failed``.
        summary: One line for logs and alerts.
        share_drifted: Share of compared columns that drifted (when computed).
        drift_detected: Whether the project's drift rule fired.
        reference_version: The champion version whose training data was the reference.
        report_uris: The HTML and JSON reports and the summary in the batch store.
        mlflow_run_id: The drift run in MLflow (``retrainer.kind=drift``), with the same reports.
    """

    status: DriftStatus
    summary: str
    share_drifted: float | None = None
    drift_detected: bool = False
    reference_version: str | None = None
    report_uris: list[str] = Field(default_factory=list)
    mlflow_run_id: str | None = None


def drift(
    config: ProjectConfig,
    tracking: Tracking,
    batch_ids: list[str],
    cycle_id: str,
    reference_version: str | None = None,
) -> DriftOutcome:
    """Compare the cycle's new batches with the data the champion was trained on (Evidently).

    The HTML and JSON reports and a machine-readable summary go to ``reports/<cycle>/drift/`` in the batch
    store and to an MLflow run tagged ``retrainer.kind=drift``.

    Args:
        config: The project.
        tracking: The MLflow server.
        batch_ids: The cycle's accepted batches.
        cycle_id: Label of the reports.
        reference_version: The champion version to compare with (recorded when the cycle started); None
            looks up the current champion.
    """
    if not batch_ids:
        return DriftOutcome(status="no_new_data", summary="no new batch to compare")
    with tracking.active():
        return _drift(config, tracking, batch_ids, cycle_id, reference_version)


def _drift(
    config: ProjectConfig, tracking: Tracking, batch_ids: list[str], cycle_id: str, reference_version: str | None
) -> DriftOutcome:
    import mlflow

    from retrainer.drift import compute_drift

    client = tracking.client()
    if reference_version is not None:
        champion = client.get_model_version(config.model_name, reference_version)
    else:
        champion = champion_version(client, config)
    if champion is None:
        return DriftOutcome(status="no_champion", summary="no champion yet: nothing to compare with")
    catalog = Catalog(config)
    columns = [*config.numeric_features, *config.categorical_features]  # what drift compares, nothing else
    try:
        reference = catalog.load([catalog.get(b) for b in window_of_run(client, champion.run_id)], columns=columns)
    except CatalogError as error:
        return DriftOutcome(
            status="no_reference", summary=f"reference data of v{champion.version} unavailable: {error}"
        )
    current = catalog.load([catalog.get(b) for b in batch_ids], columns=columns)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            title = (
                f"Drift of batch {', '.join(batch_ids)} ({len(current):,} rows) against the training data of "
                f"{config.model_name} v{champion.version} ({len(reference):,} rows)"
            )
            result = compute_drift(
                current,
                reference,
                config.numeric_features,
                config.categorical_features,
                config.drift,
                Path(tmp),
                title=title,
            )
        except ValueError as error:
            # Drift informs, it does not gate this cycle: report why it could not be measured.
            log.warning("drift not computed: %s", error)
            return DriftOutcome(status="failed", summary=f"drift not computed: {error}")
        uris = storage.upload_folder(Path(tmp), storage.join(catalog.reports, safe_id(cycle_id), "drift"))
        experiments.use_experiment(config)
        summary = result.summary
        with mlflow.start_run(run_name=experiments.run_name(batch_ids, "drift")) as run:
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
    return DriftOutcome(
        status="computed",
        share_drifted=summary.share_drifted,
        drift_detected=summary.drift_detected,
        summary=summary.summary_line(),
        reference_version=str(champion.version),
        report_uris=uris,
        mlflow_run_id=run.info.run_id,
    )
