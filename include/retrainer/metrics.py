"""The platform's own metrics of a cycle, per project: what a team's Prometheus or Grafana shows beside the
scheduler's. Pure: the orchestrator emits them through its metrics client (Airflow's StatsD), with its prefix.

Names (StatsD style, the project in the name so that plain StatsD keeps it; exporters map it to a label):

- gauge ``retrainer.champion_metric.<project>``: the primary metric of the model serving after the cycle,
  on the cycle's held-out rows;
- gauge ``retrainer.candidate_metric.<project>``: the cycle's candidate on the same rows;
- gauge ``retrainer.drift_share.<project>``: share of drifted columns of the cycle's new batches;
- timer ``retrainer.cycle_duration.<project>``: from the run's start to its record, in milliseconds;
- counter ``retrainer.decision.<project>.<outcome>``: promoted, rejected, awaiting_approval, dry_run, suppressed,
  stopped, not_run;
- counter ``retrainer.batches_quarantined.<project>``: batches the cycle or the monitor quarantined;
- counter ``retrainer.alerts_raised.<project>``: drift alerts the monitor raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from retrainer.steps.records import CycleRecord

PREFIX = "retrainer"


@dataclass(frozen=True)
class Metric:
    """One measurement to emit.

    Attributes:
        kind: ``gauge`` (a level), ``incr`` (a count to add) or ``timing`` (milliseconds).
        name: StatsD name, without the orchestrator's prefix.
        value: The value.
        tags: The same facts as tags, for StatsD dialects that have them.
    """

    kind: Literal["gauge", "incr", "timing"]
    name: str
    value: float
    tags: dict[str, str] = field(default_factory=dict)


def cycle_metrics(project: str, record: CycleRecord) -> list[Metric]:
    """The metrics of one recorded cycle."""
    tags = {"project": project}
    metrics = [
        Metric(
            "incr",
            f"{PREFIX}.decision.{project}.{record.outcome_kind}",
            1,
            {**tags, "outcome": record.outcome_kind},
        )
    ]
    evaluation, decision = record.evaluation, record.decision
    if evaluation is not None:
        metrics.append(Metric("gauge", f"{PREFIX}.candidate_metric.{project}", evaluation.candidate, tags))
        serving = evaluation.champion
        if decision is not None and decision.promoted:
            serving = evaluation.candidate
        if serving is not None:
            metrics.append(Metric("gauge", f"{PREFIX}.champion_metric.{project}", serving, tags))
    if record.drift is not None and record.drift.share_drifted is not None:
        metrics.append(Metric("gauge", f"{PREFIX}.drift_share.{project}", record.drift.share_drifted, tags))
    if record.started_at is not None:
        duration_ms = (record.recorded_at - record.started_at).total_seconds() * 1000
        metrics.append(Metric("timing", f"{PREFIX}.cycle_duration.{project}", max(duration_ms, 0.0), tags))
    return metrics


def quarantine_metrics(project: str, quarantined: int) -> list[Metric]:
    """Batches a validation quarantined (in either DAG of the project: counted once, where it happened)."""
    if not quarantined:
        return []
    return [Metric("incr", f"{PREFIX}.batches_quarantined.{project}", quarantined, {"project": project})]


def monitor_metrics(project: str, *, alerts_raised: int, share_drifted: float | None) -> list[Metric]:
    """The metrics of one drift-monitor run that got to its alert rule."""
    tags = {"project": project}
    metrics = []
    if alerts_raised:
        metrics.append(Metric("incr", f"{PREFIX}.alerts_raised.{project}", alerts_raised, tags))
    if share_drifted is not None:
        metrics.append(Metric("gauge", f"{PREFIX}.drift_share.{project}", share_drifted, tags))
    return metrics
