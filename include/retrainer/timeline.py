"""A model's whole life, as the model page in the Airflow UI shows it.

Which version serves now, since when and why; every cycle with its trigger, validation, drift, both scores with
the interval, the decision and its reason; every move of the aliases (rollbacks included); the alerts and what
came of them; the quarantined batches with their reports. Each entry carries the links to open it: the Airflow
run, the MLflow run and model version, the Evidently report and the Data Docs page.

Everything is read from what the steps recorded (cycle records and reports in the data root, the alias history
and version tags in the registry); nothing here imports Airflow.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from retrainer.catalog import BatchStatus, Catalog
from retrainer.history import AliasMove
from retrainer.links import Links, relative_to_root
from retrainer.run_notes import cycle_note
from retrainer.steps.records import CycleRecord, QuarantinedBatch, batches_and_drift, read_cycles
from retrainer.steps.rollback import read_rollbacks

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

TAG = "retrainer."


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Champion(_Frozen):
    """The version serving now.

    Attributes:
        version: The version ``@champion`` points at.
        since: When the alias moved to it (from the alias history; None when it has no recorded move).
        how: The move that made it champion: ``promotion``, ``approval``, ``rollback``, ``shadow_promotion``.
        reason: Why it is champion (the move's reason, else the gate's words on the version).
        score: Its held-out score when it was chosen.
        run_id: The run that trained it.
        url: Its page in MLflow.
        run_url: The MLflow run that trained it.
    """

    version: str
    since: datetime | None = None
    how: str | None = None
    reason: str = ""
    score: float | None = None
    run_id: str | None = None
    url: str | None = None
    run_url: str | None = None


class CycleEntry(_Frozen):
    """One cycle, as a row of the timeline.

    Attributes:
        decision_kind: One word for styling: promoted, rejected, quarantined, stopped, suppressed, ...
        note: The cycle's run note (the same text Airflow shows).
    """

    cycle_id: str
    attempt: int
    at: datetime
    cutoff: str
    trigger: str
    batches: list[str]
    validation: str
    drift_share: float | None
    drift_summary: str | None
    metric: str | None
    candidate: float | None
    champion: float | None
    champion_version: str | None
    interval: str | None
    decision: str
    decision_kind: str
    reason: str
    version: str | None
    note: str
    airflow_url: str | None = None
    candidate_run_url: str | None = None
    version_url: str | None = None
    drift_report_url: str | None = None
    data_docs_url: str | None = None


class MoveEntry(_Frozen):
    """One move of an alias (a promotion, an approval, a rollback, a shadow move), with links."""

    move: AliasMove
    version_url: str | None = None
    airflow_url: str | None = None


class AlertEntry(_Frozen):
    """An alert that reached a cycle, and what came of it."""

    at: datetime
    via: str
    kind: str | None
    summary: str
    outcome: str
    airflow_url: str | None = None


class QuarantineEntry(_Frozen):
    """A batch in quarantine, why, and its reports."""

    batch_id: str
    at: str | None
    summary: str
    report_url: str | None = None
    data_docs_url: str | None = None


class Point(_Frozen):
    """One point of a chart: the cycle's week (or time) and a value."""

    label: str
    value: float


class ModelTimeline(_Frozen):
    """Everything the model page shows for one project."""

    project: str
    model: str
    metric: str
    greater_is_better: bool
    dag_id: str
    champion: Champion | None
    cycles: list[CycleEntry] = Field(default_factory=list)
    moves: list[MoveEntry] = Field(default_factory=list)
    alerts: list[AlertEntry] = Field(default_factory=list)
    quarantined: list[QuarantineEntry] = Field(default_factory=list)
    drift_share: list[Point] = Field(default_factory=list)
    champion_score: list[Point] = Field(default_factory=list)
    read_at: datetime


def dag_id_of(project: str) -> str:
    """The retraining DAG of a project."""
    return f"retrain_{project}"


def _report_url(links: Links, config: ProjectConfig, uri: str | None) -> str | None:
    path = relative_to_root(uri, config.data.root_uri) if uri else None
    return links.report(config.name, path) if path else None


def _airflow_url(links: Links, record: CycleRecord) -> str | None:
    if record.dag_id and record.airflow_run_id:
        return links.airflow_run(record.dag_id, record.airflow_run_id)
    return None


def cycle_entry(config: ProjectConfig, record: CycleRecord, links: Links, catalog: Catalog) -> CycleEntry:
    """A cycle record as a timeline row, with its links."""
    decision, evaluation = record.decision, record.evaluation
    batches, share = batches_and_drift(record, catalog)
    comparison = decision.comparison if decision else None
    if comparison is None and evaluation is not None:
        comparison = evaluation.comparisons.get(evaluation.metric)
    kind = record.outcome_kind
    version = decision.version if decision else None
    drift_html = next((u for u in (record.drift.report_uris if record.drift else []) if u.endswith(".html")), None)
    docs = record.validation.data_docs if record.validation else None
    if docs is None and record.quarantined:
        docs = record.quarantined[0].data_docs
    candidate_run = decision.run_id if decision else (record.training.run_id if record.training else None)
    return CycleEntry(
        cycle_id=record.cycle_id,
        attempt=record.attempt,
        at=record.started_at or record.recorded_at,
        cutoff=record.cutoff,
        trigger=record.trigger,
        batches=list(batches),
        validation=", ".join(sorted(set(batches.values()))) or "-",
        drift_share=share,
        drift_summary=record.drift.summary if record.drift else None,
        metric=evaluation.metric if evaluation else (decision.metric if decision else None),
        candidate=evaluation.candidate if evaluation else None,
        champion=evaluation.champion if evaluation else None,
        champion_version=evaluation.champion_version if evaluation else None,
        interval=comparison.interval_text() if comparison is not None else None,
        decision=record.outcome,
        decision_kind=kind,
        reason=decision.reason
        if decision
        else "; ".join([f"{q.batch_id}: {q.summary}" for q in record.quarantined] or [record.error or ""]),
        version=version,
        note=cycle_note(record),
        airflow_url=_airflow_url(links, record),
        candidate_run_url=links.mlflow_run(candidate_run) if candidate_run else None,
        version_url=links.model_version(config.model_name, version) if version else None,
        drift_report_url=_report_url(links, config, drift_html),
        data_docs_url=_report_url(links, config, docs),
    )


def _champion(config: ProjectConfig, tracking: Tracking, moves: list[AliasMove], links: Links) -> Champion | None:
    from retrainer.steps.common import champion_version

    with tracking.active():
        version = champion_version(tracking.client(), config)
    if version is None:
        return None
    number = str(version.version)
    made = next((m for m in reversed(moves) if m.alias == "champion" and m.to_version == number), None)
    tags = version.tags or {}
    score = tags.get(f"{TAG}candidate_{config.metric.name}")  # its held-out score when the gate judged it
    try:
        value = float(score) if score is not None else None
    except ValueError:
        value = None
    return Champion(
        version=number,
        since=made.at if made else None,
        how=made.action if made else None,
        reason=(made.reason if made else "") or tags.get(f"{TAG}reason", ""),
        score=value,
        run_id=version.run_id,
        url=links.model_version(config.model_name, number),
        run_url=links.mlflow_run(version.run_id) if version.run_id else None,
    )


def _alerts(records: list[CycleRecord], links: Links) -> list[AlertEntry]:
    entries = []
    for record in records:
        alerts = record.alerts or (record.ingest.alerts if record.ingest else [])
        if not alerts:
            continue
        if record.gate is not None and record.gate.decision == "suppressed":
            outcome = f"suppressed: {record.gate.reason}"
        else:
            outcome = f"retrained: {record.outcome}"
        for alert in alerts:
            entries.append(
                AlertEntry(
                    at=alert.raised_at or record.started_at or record.recorded_at,
                    via=alert.via,
                    kind=alert.kind.value if alert.kind else None,
                    summary=alert.invalid or alert.summary,
                    outcome=outcome,
                    airflow_url=_airflow_url(links, record),
                )
            )
    return sorted(entries, key=lambda e: e.at, reverse=True)


def _quarantined(config: ProjectConfig, links: Links) -> list[QuarantineEntry]:
    entries = []
    for batch in Catalog(config).all():
        if batch.status is not BatchStatus.QUARANTINED:
            continue
        found = QuarantinedBatch.of(batch.batch_id, batch.validation)
        entries.append(
            QuarantineEntry(
                batch_id=batch.batch_id,
                at=batch.validated_at,
                summary=found.summary,
                report_url=_report_url(links, config, found.report_uri),
                data_docs_url=_report_url(links, config, found.data_docs),
            )
        )
    return sorted(entries, key=lambda e: e.batch_id, reverse=True)


def _order(cycle: CycleEntry) -> tuple[datetime, str, int]:
    """When a cycle ran; cycles of the same second (a replay, the CLI) by their cutoff, then their attempt."""
    return cycle.at, cycle.cutoff, cycle.attempt


def _series(cycles: list[CycleEntry]) -> tuple[list[Point], list[Point]]:
    """Drift share and the serving champion's held-out score per cycle, oldest first."""
    drift, score = [], []
    for cycle in sorted(cycles, key=_order):
        label = max(cycle.batches) if cycle.batches else f"{cycle.at:%Y-%m-%d %H:%M}"
        if cycle.drift_share is not None:
            drift.append(Point(label=label, value=cycle.drift_share))
        if cycle.champion is not None:
            score.append(Point(label=label, value=cycle.champion))
        elif cycle.decision_kind == "promoted" and cycle.candidate is not None:
            score.append(Point(label=label, value=cycle.candidate))  # a first model: its own score
    return drift, score


def model_timeline(config: ProjectConfig, tracking: Tracking, links: Links) -> ModelTimeline:
    """Read a project's whole history (records, registry) into what its model page shows, newest first."""
    from retrainer.steps.registry import alias_history

    records = read_cycles(config)
    catalog = Catalog(config)
    cycles = [cycle_entry(config, record, links, catalog) for record in records]
    by_cycle = {record.cycle_id: record for record in records}
    history = alias_history(config, tracking)
    moves = []
    for move in history:
        record = by_cycle.get(move.cycle_id or "")
        moves.append(
            MoveEntry(
                move=move,
                version_url=links.model_version(config.model_name, move.to_version) if move.to_version else None,
                airflow_url=_airflow_url(links, record) if record else None,
            )
        )
    # Rollbacks recorded before the alias history existed still show as moves.
    recorded = {(m.from_version, m.to_version) for m in history if m.action == "rollback"}
    for rollback in read_rollbacks(config):
        if (rollback.from_version, rollback.to_version) not in recorded and rollback.at is not None:
            moves.append(
                MoveEntry(
                    move=AliasMove(
                        sequence=0,
                        at=rollback.at,
                        alias="champion",
                        from_version=rollback.from_version,
                        to_version=rollback.to_version,
                        action="rollback",
                        by=rollback.by or "manual",
                        reason=rollback.reason,
                    ),
                    version_url=links.model_version(config.model_name, rollback.to_version),
                )
            )
    drift, score = _series(cycles)
    return ModelTimeline(
        project=config.name,
        model=config.model_name,
        metric=config.metric.name,
        greater_is_better=config.metric.greater_is_better,
        dag_id=dag_id_of(config.name),
        champion=_champion(config, tracking, history, links),
        cycles=sorted(cycles, key=_order, reverse=True),
        moves=sorted(moves, key=lambda m: m.move.at, reverse=True),
        alerts=_alerts(records, links),
        quarantined=_quarantined(config, links),
        drift_share=drift,
        champion_score=score,
        read_at=datetime.now(UTC).replace(microsecond=0),
    )
