"""Record: one cycle's outcome, whatever happened, and the cycle table built from those records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from retrainer import storage
from retrainer.alerts import ReceivedAlert
from retrainer.catalog import BatchStatus, Catalog, CatalogError
from retrainer.steps.candidate import TrainingResult
from retrainer.steps.common import NO_NEW_DATA, StepResult, safe_id
from retrainer.steps.data_drift import DriftOutcome
from retrainer.steps.evaluation import Evaluation
from retrainer.steps.gating import GateOutcome, last_alert_retrain_uri
from retrainer.steps.ingestion import IngestResult
from retrainer.steps.registry import DecisionRecord
from retrainer.steps.rollback import read_rollbacks
from retrainer.steps.validation import ValidationResult

if TYPE_CHECKING:
    from retrainer.comparison import SliceComparison
    from retrainer.config import ProjectConfig


class CycleParts(BaseModel):
    """What each step of a cycle returned (None for a step that did not run or failed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gate: GateOutcome | None = None
    ingest: IngestResult | None = None
    validation: ValidationResult | None = None
    drift: DriftOutcome | None = None
    planned: bool = False
    training: TrainingResult | None = None
    evaluation: Evaluation | None = None
    decision: DecisionRecord | None = None


class QuarantinedBatch(BaseModel):
    """A batch a cycle sent to quarantine, in a few words.

    Attributes:
        batch_id: The batch.
        summary: Why, short: ``2/37 expectations failed``, ``evicted by alice: ...``, ``unreadable: ...``.
        report_uri: Its quarantine report (``quarantine/<batch>/validation.json``).
        data_docs: The Data Docs page of its validation, when one was built.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    batch_id: str
    summary: str
    report_uri: str | None = None
    data_docs: str | None = None

    @classmethod
    def of(cls, batch_id: str, validation: dict[str, Any]) -> QuarantinedBatch:
        """From the validation details the catalog keeps on a quarantined batch."""
        failed, evaluated = validation.get("failed"), validation.get("evaluated")
        checks = [c.get("message", "") for c in validation.get("checks") or [] if isinstance(c, dict)]
        if validation.get("evicted"):
            summary = f"evicted by {validation.get('evicted_by', '?')}: {validation.get('reason', '')}"
        elif isinstance(failed, list) and isinstance(evaluated, int) and evaluated:
            summary = f"{len(failed)}/{evaluated} expectations failed"
            described = [f.get("description", "") for f in failed if isinstance(f, dict) and f.get("description")]
            if described:
                summary += f" ({described[0]}{', …' if len(described) > 1 else ''})"
            if checks:
                summary += f", and the platform's checks: {'; '.join(checks)}"
        elif checks:
            summary = f"failed the platform's checks: {'; '.join(checks)}"
        else:
            summary = str(validation.get("error") or validation.get("summary") or "failed validation")
        return cls(
            batch_id=batch_id,
            summary=summary,
            report_uri=validation.get("report_uri"),
            data_docs=validation.get("data_docs"),
        )


class CycleRecord(StepResult):
    """One cycle's outcome, written to ``reports/cycles/<cycle_id>.json``.

    Attributes:
        cycle_id: The cycle (the Airflow run id, made safe).
        dag_id: The Airflow DAG that ran it (None for a cycle run by the CLI).
        airflow_run_id: The Airflow run id as Airflow knows it (for links to the run).
        recorded_at: When it was recorded.
        started_at: When the cycle started, if known (for its duration).
        trigger: ``scheduled``, ``manual``, ``backfill`` or ``drift_alert``.
        cutoff: The cycle's cutoff (ISO time).
        alerts: The alerts that started it.
        project_sha256: Hash of the project configuration the cycle ran with (its snapshot).
        error: Why the cycle ended without a decision, if it did.
        batches: Status of each batch the cycle looked at.
        quarantined: The batches it quarantined, with why.
        attempt: 1 for a cycle's first run; a rerun of the same cycle is the next attempt, and the earlier
            records stay beside it (``<cycle_id>.attempt<N>.json``), so nothing a run decided is overwritten.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    cycle_id: str
    recorded_at: datetime
    dag_id: str | None = None
    airflow_run_id: str | None = None
    started_at: datetime | None = None
    trigger: str = ""
    cutoff: str = ""
    attempt: int = 1
    alerts: list[ReceivedAlert] = Field(default_factory=list)
    project_sha256: str | None = None
    gate: GateOutcome | None = None
    ingest: IngestResult | None = None
    validation: ValidationResult | None = None
    drift: DriftOutcome | None = None
    training: TrainingResult | None = None
    evaluation: Evaluation | None = None
    decision: DecisionRecord | None = None
    error: str | None = None
    batches: dict[str, str] = Field(default_factory=dict)
    quarantined: list[QuarantinedBatch] = Field(default_factory=list)

    @property
    def outcome(self) -> str:
        """The cycle in a few words: ``promoted v3``, ``rejected v4``, ``stopped: ...``, ``suppressed: ...``."""
        if self.decision is not None:
            if self.decision.awaiting_approval:
                return f"awaiting approval v{self.decision.version}"
            if self.decision.challenger:
                return f"challenger v{self.decision.version}"
            if self.decision.version:
                return f"{self.decision.verdict.value} v{self.decision.version}"
            if self.decision.superseded:
                return "superseded"
            return f"dry run: {self.decision.verdict.value}"
        if self.gate is not None and self.gate.decision == "suppressed":
            return "suppressed: cooldown"
        if self.quarantined:
            return f"quarantined {', '.join(q.batch_id for q in self.quarantined)}"
        if self.no_new_data:
            return "no retrain: no new accepted batch"
        if self.error:
            return f"stopped: {self.error.split(':')[0]}"
        return "not run"

    @property
    def no_new_data(self) -> bool:
        """The cycle found no new accepted batch and was not forced: nothing to do, not a failure."""
        return bool(self.error and self.error.startswith(NO_NEW_DATA))

    @property
    def outcome_kind(self) -> str:
        """One word for metrics: promoted, rejected, awaiting_approval, challenger, dry_run, suppressed,
        quarantined, no_new_data, stopped or not_run."""
        if self.decision is not None:
            return self.decision.state.split(":")[0]
        if self.gate is not None and self.gate.decision == "suppressed":
            return "suppressed"
        if self.quarantined:
            return "quarantined"
        if self.no_new_data:
            return "no_new_data"
        return "stopped" if self.error else "not_run"


class CycleRow(BaseModel):
    """One line of the cycle table (``retrainer report``)."""

    model_config = ConfigDict(frozen=True)

    cycle: str
    trigger: str
    week: str
    validation: str
    drift_share: float | None
    champion: float | None
    candidate: float | None
    difference: str
    broken_rows: float | None = None
    regressed_slices: list[str] = Field(default_factory=list)
    decision: str
    reason: str
    cutoff: str


def error_of(parts: CycleParts, forced: bool) -> str | None:
    """Why a cycle ended without a decision, read from which steps returned a result (see the task logs).

    Args:
        parts: What each step returned.
        forced: Whether the cycle had to train (``force``, or an alert), so a missing plan is a failure.
    """
    if parts.gate is not None and parts.gate.decision == "suppressed":
        return None
    if parts.ingest is None:
        return "ingest failed"
    if parts.validation is None:
        return "validation failed: a batch was quarantined or could not be validated, nothing trained"
    if parts.training is None:
        if not parts.planned and not forced:
            return f"{NO_NEW_DATA} in this cycle, nothing to train (or planning failed: see plan_training)"
        return "training failed: see the train task's log"
    if parts.evaluation is None:
        return "evaluate failed"
    if parts.decision is None:
        return "promote failed"
    return None


def record_cycle(
    config: ProjectConfig,
    cycle_id: str,
    parts: CycleParts,
    *,
    trigger: str,
    cutoff: str,
    alerts: list[ReceivedAlert] | None = None,
    error: str | None = None,
    started_at: datetime | None = None,
    project_sha256: str | None = None,
    dag_id: str | None = None,
    airflow_run_id: str | None = None,
) -> CycleRecord:
    """Write one cycle's outcome to ``reports/cycles/<cycle_id>.json`` (the source of the cycle table).

    An alert-triggered cycle that trained also moves the pointer the cooldown gate reads.
    """
    catalog = Catalog(config)
    batch_ids = [*parts.ingest.quarantined, *parts.ingest.pending] if parts.ingest else []
    batches: dict[str, str] = {}
    quarantined: list[QuarantinedBatch] = []
    for batch_id in batch_ids:
        try:
            batch = catalog.get(batch_id)
        except CatalogError:
            batches[batch_id] = "unknown"
            continue
        batches[batch_id] = batch.status.value
        if batch.status is BatchStatus.QUARANTINED:
            quarantined.append(QuarantinedBatch.of(batch_id, batch.validation))
    uri = storage.join(catalog.reports, "cycles", f"{safe_id(cycle_id)}.json")
    attempt = 1
    if storage.exists(uri):  # a rerun: the earlier attempt's record is kept under its number
        earlier = CycleRecord.model_validate_json(storage.read_bytes(uri))
        kept = storage.join(catalog.reports, "cycles", f"{safe_id(cycle_id)}.attempt{earlier.attempt}.json")
        storage.move(uri, kept)
        attempt = earlier.attempt + 1
    record = CycleRecord(
        cycle_id=cycle_id,
        recorded_at=datetime.now(UTC).replace(microsecond=0),
        dag_id=dag_id,
        airflow_run_id=airflow_run_id,
        attempt=attempt,
        started_at=started_at,
        trigger=trigger,
        cutoff=cutoff,
        alerts=alerts or [],
        project_sha256=project_sha256,
        gate=parts.gate,
        ingest=parts.ingest,
        validation=parts.validation,
        drift=parts.drift,
        training=parts.training,
        evaluation=parts.evaluation,
        decision=parts.decision,
        error=error,
        batches=batches,
        quarantined=quarantined,
    )
    document = json.dumps(record.to_json(), indent=2).encode()
    storage.write_bytes(uri, document)
    if trigger == "drift_alert" and parts.training is not None:
        pointer = {"cycle_id": cycle_id, "recorded_at": record.recorded_at.isoformat()}
        storage.write_bytes(last_alert_retrain_uri(config), json.dumps(pointer).encode())
    return record


def amend_cycle_decision(config: ProjectConfig, decision: DecisionRecord) -> CycleRecord | None:
    """Replace the decision in its cycle's record (an approval answered after the cycle was recorded, as with
    ``retrainer approve``); None when the cycle has no record."""
    if not decision.cycle_id:
        return None
    uri = storage.join(Catalog(config).reports, "cycles", f"{safe_id(decision.cycle_id)}.json")
    if not storage.exists(uri):
        return None
    record = CycleRecord.model_validate_json(storage.read_bytes(uri))
    amended = record.model_copy(update={"decision": decision})
    storage.write_bytes(uri, json.dumps(amended.to_json(), indent=2).encode())
    return amended


def read_cycles(config: ProjectConfig) -> list[CycleRecord]:
    """Every recorded cycle (a report: reads each record)."""
    folder = storage.join(Catalog(config).reports, "cycles")
    return [
        CycleRecord.model_validate_json(storage.read_bytes(uri)) for uri in storage.list_files(folder, "*.json")
    ]


def _difference(record: CycleRecord) -> str:
    """The primary metric's paired difference with its interval, e.g. ``-2.1 [95% CI -2.6, -1.5]``."""
    comparison = record.decision.comparison if record.decision else None
    if comparison is None and record.evaluation is not None:
        comparison = record.evaluation.comparisons.get(record.evaluation.metric)
    return comparison.interval_text() if comparison is not None else "-"


def _compatibility(record: CycleRecord) -> float | None:
    """Share of the held-out rows the candidate breaks."""
    source = record.decision or record.evaluation
    compatible = source.compatibility if source is not None else None
    return compatible.rate if compatible is not None else None


def _slices(record: CycleRecord) -> list[SliceComparison]:
    source = record.decision or record.evaluation
    return source.slices if source is not None else []


def batches_and_drift(record: CycleRecord, catalog: Catalog) -> tuple[dict[str, str], float | None]:
    """The batches a cycle was about with their status, and their drift share. An alert run ingests nothing of
    its own: the drift monitor validated the batches its alerts are about and measured their drift."""
    batches = dict(record.batches)
    share = record.drift.share_drifted if record.drift else None
    alerts = record.alerts or (record.ingest.alerts if record.ingest else [])
    if not batches:
        for batch_id in (b for alert in alerts for b in alert.batch_ids):
            try:
                batches[batch_id] = catalog.get(batch_id).status.value
            except CatalogError:
                batches[batch_id] = "unknown"
        shares = [(alert.drift or {}).get("share_drifted") for alert in alerts]
        share = next((value for value in shares if value is not None), share)
    return batches, share


def _quarantine_reason(record: CycleRecord) -> str:
    """What failed, for a cycle that quarantined its batches (the outcome names them when there is one)."""
    many = len(record.quarantined) > 1
    return "; ".join(f"{q.batch_id}: {q.summary}" if many else q.summary for q in record.quarantined)


def cycle_table(config: ProjectConfig) -> list[CycleRow]:
    """One row per recorded cycle, oldest first: week, validation, drift share, both scores, decision."""
    catalog = Catalog(config)
    rows = []
    for record in read_cycles(config):
        batches, share = batches_and_drift(record, catalog)
        rows.append(
            CycleRow(
                cycle=record.cycle_id if record.attempt == 1 else f"{record.cycle_id} (attempt {record.attempt})",
                trigger=record.trigger,
                week=", ".join(batches) or "-",
                validation=", ".join(sorted(set(batches.values()))) or "-",
                drift_share=share,
                champion=record.evaluation.champion if record.evaluation else None,
                candidate=record.evaluation.candidate if record.evaluation else None,
                difference=_difference(record),
                broken_rows=_compatibility(record),
                regressed_slices=[s.name for s in _slices(record) if s.status == "regressed"],
                decision=record.outcome,
                reason=record.decision.reason
                if record.decision
                else (_quarantine_reason(record) or record.error or ""),
                cutoff=record.cutoff,
            )
        )
    for rollback in read_rollbacks(config):  # an event of its own: when, who, from which version to which
        when = rollback.at.isoformat() if rollback.at else "-"
        rows.append(
            CycleRow(
                cycle=f"rollback v{rollback.from_version} -> v{rollback.to_version}",
                trigger=rollback.by or "manual",
                week="-",
                validation="-",
                drift_share=None,
                champion=None,
                candidate=None,
                difference="-",
                decision="rolled_back",
                reason=f"v{rollback.from_version} -> v{rollback.to_version}: {rollback.reason}",
                cutoff=when,
            )
        )
    return sorted(rows, key=lambda r: (r.cutoff, r.cycle))
