"""Concept drift: attach late labels to their batches and check whether the champion got worse on them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import Field

from retrainer import storage
from retrainer.catalog import Catalog
from retrainer.steps.common import StepResult, champion_version, load_model

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking


class ConceptCheck(StepResult):
    """The champion judged on one batch's newly labelled rows.

    Attributes:
        batch_id: The batch whose labels arrived.
        rows: Newly labelled rows.
        metric: The project's primary metric.
        champion_version: The champion judged (None when there is none yet).
        max_degradation: The configured limit (0.05: 5% worse).
        degraded: Whether the champion is worse than its baseline by more than the limit.
        note: One line saying what was found.
        baseline: The champion's held-out score when it was evaluated.
        score: Its score on the newly labelled rows.
        degradation: Relative degradation (positive = worse).
        report_uri: Where the check is recorded (``reports/concept/<batch>.json``).
    """

    batch_id: str
    rows: int
    metric: str
    champion_version: str | None
    max_degradation: float
    degraded: bool = False
    note: str = ""
    baseline: float | None = None
    score: float | None = None
    degradation: float | None = None
    report_uri: str = ""


class ConceptDriftResult(StepResult):
    """Late labels attached, waiting or rejected, and the champion's checks on them.

    Attributes:
        registered: Batch ids that got labels.
        waiting: Labels of batches not validated yet (looked at again next time).
        rejected: ``[file, reason]`` of label files that cannot be used (moved to ``labels/rejected/``).
        checks: One check per batch that got labels.
        drift_detected: Whether any check found concept drift.
        summary: One line for logs and alerts.
    """

    registered: list[str]
    waiting: list[str]
    rejected: list[tuple[str, str]]
    checks: list[ConceptCheck] = Field(default_factory=list)
    drift_detected: bool = False
    summary: str = "no new labels"


def concept_drift(config: ProjectConfig, tracking: Tracking) -> ConceptDriftResult:
    """Attach newly arrived late labels to their batches and check whether the champion got worse on them.

    The champion's primary metric on the rows that just got labels is compared with its baseline, its score on
    the held-out rows when it was evaluated (``holdout_<metric>`` of its candidate run). A relative degradation
    beyond ``concept_drift.max_degradation`` is concept drift. Each check is written to
    ``reports/concept/<batch>.json``; label files that cannot be used are rejected with the reason.
    """
    catalog = Catalog(config)
    outcome = catalog.register_labels()
    checks = []
    with tracking.active():
        client = tracking.client()
        champion = champion_version(client, config)
        for record in outcome.registered:
            check = _judge(config, client, champion, catalog.late_labelled_rows(record), record.batch_id)
            uri = storage.join(catalog.reports, "concept", f"{record.batch_id}.json")
            storage.write_bytes(uri, json.dumps({**check.to_json(), "labels": record.labels}, indent=2).encode())
            checks.append(check.model_copy(update={"report_uri": uri}))
    degraded = [c for c in checks if c.degraded]
    parts = [f"{c.batch_id}: {c.note}" for c in checks]
    parts += [f"labels {name} rejected: {error}" for name, error in outcome.rejected]
    if outcome.waiting:
        parts.append(f"labels waiting for their batch to be validated: {', '.join(outcome.waiting)}")
    return ConceptDriftResult(
        registered=[r.batch_id for r in outcome.registered],
        waiting=outcome.waiting,
        rejected=outcome.rejected,
        checks=checks,
        drift_detected=bool(degraded),
        summary=("CONCEPT DRIFT: " if degraded else "") + ("; ".join(parts) or "no new labels"),
    )


def _judge(config: ProjectConfig, client: Any, champion: Any, rows: Any, batch_id: str) -> ConceptCheck:
    """The champion's primary metric on a batch's newly labelled rows against its held-out baseline."""
    from retrainer import modeling
    from retrainer.promotion import relative_improvement

    metric, limit = config.metric.name, config.concept_drift.max_degradation
    check = ConceptCheck(
        batch_id=batch_id,
        rows=len(rows),
        metric=metric,
        champion_version=None if champion is None else str(champion.version),
        max_degradation=limit,
    )
    if champion is None:
        return check.model_copy(update={"note": "no champion yet: nothing to check"})
    if len(rows) < config.concept_drift.min_rows:
        note = f"only {len(rows)} newly labelled rows (concept_drift.min_rows is {config.concept_drift.min_rows})"
        return check.model_copy(update={"note": note})
    baseline = client.get_run(champion.run_id).data.metrics.get(f"holdout_{metric}")
    score = modeling.score(
        load_model(client, config, f"models:/{config.model_name}/{champion.version}"), rows, config
    )
    if baseline is None or metric not in score:
        return check.model_copy(
            update={"note": f"{metric} of v{champion.version} cannot be compared on these rows"}
        )
    degradation = -relative_improvement(score[metric], baseline, config.metric.greater_is_better)
    note = (
        f"{metric} of v{champion.version} {score[metric]:.4g} on {len(rows)} late-labelled rows vs "
        f"{baseline:.4g} held out: {degradation:+.1%} worse (limit {limit:.0%})"
    )
    return check.model_copy(
        update={
            "baseline": baseline,
            "score": score[metric],
            "degradation": degradation,
            "degraded": degradation > limit,
            "note": note,
        }
    )
