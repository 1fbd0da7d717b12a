"""Ingest: register newly landed batches and list those a cycle must validate."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import Field

from retrainer.alerts import ReceivedAlert
from retrainer.catalog import BatchStatus, Catalog
from retrainer.steps.common import StepResult, champion_version, parse_cutoff

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking


class IngestResult(StepResult):
    """What ingest found.

    Attributes:
        registered: Batch ids registered in this call.
        quarantined: Those of them that were unreadable and went straight to quarantine.
        pending: Batches awaiting validation whose period ended by the cutoff, oldest first.
        champion_version: The champion when the cycle started (drift compares against its data even if
            promote moves the alias first), or None.
        trigger: Why the run started (``scheduled``, ``manual``, ``drift_alert``...), set by the orchestrator.
        alerts: The alerts that started the run, set by the orchestrator.
    """

    registered: list[str]
    quarantined: list[str]
    pending: list[str]
    champion_version: str | None
    trigger: str = ""
    alerts: list[ReceivedAlert] = Field(default_factory=list)


def ingest(config: ProjectConfig, tracking: Tracking, cutoff: str | datetime | None = None) -> IngestResult:
    """Register newly landed batches and list those a cycle at ``cutoff`` must process."""
    catalog = Catalog(config)
    new = catalog.register_new()
    pending = catalog.pending(parse_cutoff(cutoff))
    with tracking.active():
        champion = champion_version(tracking.client(), config)
    return IngestResult(
        registered=[r.batch_id for r in new],
        quarantined=[r.batch_id for r in new if r.status is BatchStatus.QUARANTINED],
        pending=[r.batch_id for r in pending],
        champion_version=None if champion is None else str(champion.version),
    )
