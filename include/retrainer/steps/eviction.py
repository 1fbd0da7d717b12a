"""Evict: quarantine a batch that passed validation, recorded like any decision (``retrainer quarantine``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from retrainer import storage
from retrainer.catalog import Catalog
from retrainer.steps.candidate import candidate_runs_trained_on
from retrainer.steps.common import StepResult, champion_version, safe_id
from retrainer.tracking import registry_missing

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)


class Eviction(StepResult):
    """What evicting a batch did.

    Attributes:
        batch_id: The batch evicted.
        previous_status: ``accepted`` or ``landed``.
        reason: Why, as given.
        evicted_by: Who.
        evicted_at: When (UTC, ISO 8601).
        quarantine_uri: Where its file is now.
        report_uri: The quarantine report (reason, who, when, what validation had said).
        trained_into: Model versions whose training window held the batch, oldest first.
        champion_trained_on_it: Whether the current champion is one of them (the alias is not moved: a
            rollback or the next cycle, whose window no longer holds the batch, replaces it).
        record_uri: The eviction's record under ``reports/evictions/``.
    """

    batch_id: str
    previous_status: str
    reason: str
    evicted_by: str
    evicted_at: str
    quarantine_uri: str
    report_uri: str
    trained_into: list[str]
    champion_trained_on_it: bool
    record_uri: str


def evict(config: ProjectConfig, tracking: Tracking, batch_id: str, reason: str, by: str) -> Eviction:
    """Move an accepted (or landed) batch into quarantine with the reason, and record the eviction.

    Raises:
        CatalogError: The batch is unknown, in quarantine already, or no reason is given.
    """
    catalog = Catalog(config)
    before = catalog.get(batch_id)
    record = catalog.evict(batch_id, reason, by)
    with tracking.active():
        client = tracking.client()
        trained = _versions_trained_on(client, config, batch_id)
        champion = champion_version(client, config)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    record_uri = storage.join(catalog.reports, "evictions", f"{stamp}-{safe_id(batch_id)}.json")
    eviction = Eviction(
        batch_id=batch_id,
        previous_status=before.status.value,
        reason=reason,
        evicted_by=by,
        evicted_at=str(record.validation["evicted_at"]),
        quarantine_uri=record.uri,
        report_uri=str(record.validation["report_uri"]),
        trained_into=trained,
        champion_trained_on_it=champion is not None and str(champion.version) in trained,
        record_uri=record_uri,
    )
    storage.write_bytes(record_uri, json.dumps(eviction.to_json(), indent=2).encode(), overwrite=False)
    if eviction.champion_trained_on_it:
        log.warning(
            "batch %s was in the training window of the champion v%s: it keeps serving until the next cycle "
            "(whose window no longer holds the batch) or a rollback replaces it",
            batch_id,
            champion.version if champion else "?",
        )
    return eviction


def _versions_trained_on(client: MlflowClient, config: ProjectConfig, batch_id: str) -> list[str]:
    """Registered versions of candidate runs whose training window held ``batch_id``."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(config.name)
    if experiment is None:
        return []
    runs = {run.info.run_id for run in candidate_runs_trained_on(client, experiment.experiment_id, batch_id)}
    if not runs:
        return []
    try:
        versions = client.search_model_versions(f"name = '{config.model_name}'")
    except MlflowException as error:
        if registry_missing(error):
            return []
        raise
    return sorted((str(v.version) for v in versions if v.run_id in runs), key=int)
