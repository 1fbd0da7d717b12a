"""Validate: each pending batch against the project's Great Expectations suite; fail closed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from retrainer import storage
from retrainer.batch_checks import check_batch
from retrainer.catalog import BatchStatus, Catalog, CatalogError
from retrainer.steps.common import BatchRejectedError, StepResult

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig

log = logging.getLogger(__name__)


class ValidationResult(StepResult):
    """What validation decided.

    Attributes:
        accepted: Batch ids accepted for training (including ones accepted earlier).
        summaries: One line per batch, e.g. ``batch 2013-01-07 passed 37/37 expectations of suite ...``.
        data_docs: Where the Great Expectations Data Docs of the project are (its data root), if built.
    """

    accepted: list[str]
    summaries: dict[str, str]
    data_docs: str | None = None


def results_root(config: ProjectConfig) -> str:
    """Where validation results and Data Docs of a project go: ``<root_uri>/reports/gx``, never the checkout."""
    return storage.join(config.data.root_uri, "reports", "gx")


def validate(
    config: ProjectConfig,
    batch_ids: list[str],
    context_root: Path | None = None,
    build_docs: bool = True,
    quarantined_on_arrival: list[str] | None = None,
) -> ValidationResult:
    """Validate batches with the project's Great Expectations suite; fail closed.

    Every batch is validated, by its suite and by the platform's own checks (:mod:`retrainer.batch_checks`: what
    training cannot take whatever the suite says). Passing batches are accepted; failing ones, and batches whose
    file changed or vanished since it landed, are moved to quarantine with a report. If any failed (or ingest
    quarantined unreadable files, ``quarantined_on_arrival``), :class:`BatchRejectedError` is raised after all were
    handled, naming what failed, so that the cycle stops before training and the champion is untouched.
    Storage errors (e.g. S3 unreachable) propagate: they are transient, and the task retries.

    The committed Great Expectations context is only read; results and Data Docs go to
    :func:`results_root`.

    Raises:
        BatchRejectedError: At least one batch failed validation.
    """
    from retrainer.validation import validate_frame

    catalog = Catalog(config)
    accepted: list[str] = []
    rejected: list[str] = []
    rejected_docs: str | None = None
    summaries: dict[str, str] = {}
    docs = None
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
        outcome = validate_frame(
            frame, config.validation.suite, batch_id, context_root, build_docs, results_root=results_root(config)
        )
        problems = check_batch(frame, config)
        docs = outcome.data_docs or docs
        summary = outcome.summary_line()
        if problems:
            summary = (
                f"batch {batch_id} FAILED the platform's checks: {'; '.join(p.message for p in problems)} "
                f"(and {'passed' if outcome.success else 'failed'} its suite: {summary})"
            )
        summaries[batch_id] = summary
        details = {"success": outcome.success and not problems, "summary": summary, "data_docs": outcome.data_docs}
        if details["success"]:
            catalog.accept(batch_id, details)
            accepted.append(batch_id)
        else:
            report = {**outcome.to_dict(), **details, "checks": [p.to_dict() for p in problems]}
            catalog.quarantine_batch(batch_id, report)
            rejected.append(batch_id)
            rejected_docs = rejected_docs or outcome.data_docs
    if rejected:
        lines = "; ".join(summaries[b] for b in rejected)
        raise BatchRejectedError(
            f"quarantined {', '.join(rejected)}, nothing trained: {lines}", rejected, rejected_docs
        )
    return ValidationResult(accepted=accepted, summaries=summaries, data_docs=docs)
