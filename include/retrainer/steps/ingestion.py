"""Ingest: register newly landed batches and list those a cycle must validate."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from retrainer.alerts import ReceivedAlert
from retrainer.catalog import BatchStatus, Catalog
from retrainer.steps.common import StepResult, champion_version, parse_cutoff

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)


class LandingFile(BaseModel):
    """A file of the landing zone that did not become a batch, and why."""

    name: str
    reason: str


class IngestResult(StepResult):
    """What ingest found.

    Attributes:
        registered: Batch ids registered in this call.
        quarantined: Those of them that were unreadable and went straight to quarantine.
        pending: Batches awaiting validation whose period ended by the cutoff, oldest first.
        waiting: Batches awaiting validation whose period ends after the cutoff (a later cycle takes them).
        rejected: Files moved to ``landing/rejected/`` in this call, with the reason written beside them.
        ignored: Files left in the landing zone (not a batch's name), with the reason.
        champion_version: The champion when the cycle started (drift compares against its data even if
            promote moves the alias first), or None.
        trigger: Why the run started (``scheduled``, ``manual``, ``drift_alert``...), set by the orchestrator.
        alerts: The alerts that started the run, set by the orchestrator.
    """

    registered: list[str]
    quarantined: list[str]
    pending: list[str]
    champion_version: str | None
    waiting: list[str] = Field(default_factory=list)
    rejected: list[LandingFile] = Field(default_factory=list)
    ignored: list[LandingFile] = Field(default_factory=list)
    trigger: str = ""
    alerts: list[ReceivedAlert] = Field(default_factory=list)


def ingest(config: ProjectConfig, tracking: Tracking, cutoff: str | datetime | None = None) -> IngestResult:
    """Register newly landed batches and list those a cycle at ``cutoff`` must process."""
    catalog = Catalog(config)
    scan = catalog.scan_landing()
    when = parse_cutoff(cutoff)
    landed = catalog.landed()
    pending = [r for r in landed if r.period_end_ts <= when]
    waiting = [r for r in landed if r.period_end_ts > when]
    for record in waiting:
        log.info(
            "batch %s waits: its period ends %s, after this cycle's cutoff %s",
            record.batch_id,
            record.period_end,
            when,
        )
    with tracking.active():
        champion = champion_version(tracking.client(), config)
    return IngestResult(
        registered=[r.batch_id for r in scan.registered],
        quarantined=[r.batch_id for r in scan.registered if r.status is BatchStatus.QUARANTINED],
        pending=[r.batch_id for r in pending],
        waiting=[r.batch_id for r in waiting],
        rejected=[LandingFile(name=name, reason=reason) for name, reason in scan.rejected],
        ignored=[LandingFile(name=name, reason=reason) for name, reason in scan.ignored],
        champion_version=None if champion is None else str(champion.version),
    )
