"""A whole cycle in one process, wired as the DAG wires the steps (for the CLI, tests and benchmarks)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from retrainer.steps.candidate import train, untrained_batches
from retrainer.steps.common import BatchRejectedError, NothingToTrainError, parse_cutoff
from retrainer.steps.data_drift import drift
from retrainer.steps.evaluation import evaluate
from retrainer.steps.ingestion import ingest
from retrainer.steps.records import CycleParts, CycleRecord, record_cycle
from retrainer.steps.registry import promote
from retrainer.steps.validation import validate

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking


log = logging.getLogger(__name__)


def run_cycle(
    config: ProjectConfig,
    tracking: Tracking,
    cutoff: str | datetime | None = None,
    cycle_id: str | None = None,
    *,
    trigger: str = "manual",
    force: bool = False,
    dry_run: bool = False,
    window_batches: int | None = None,
    max_train_rows: int | None = None,
    context_root: Path | None = None,
) -> CycleRecord:
    """Run every step in this process, the way the DAG wires them.

    Returns:
        The cycle record, also written to ``reports/cycles/``.
    """
    started = datetime.now(UTC).replace(microsecond=0)
    when = parse_cutoff(cutoff)
    cycle_id = cycle_id or f"{trigger}__{when.strftime('%Y%m%dT%H%M%S')}"
    parts: dict[str, object] = {}
    error = None
    try:
        ingested = parts["ingest"] = ingest(config, tracking, when)
        validated = parts["validation"] = validate(
            config, ingested.pending, context_root, quarantined_on_arrival=ingested.quarantined
        )
        parts["drift"] = drift(config, tracking, validated.accepted, cycle_id, ingested.champion_version)
        parts["planned"] = True
        trained = parts["training"] = train(
            config,
            tracking,
            when,
            cycle_id,
            trigger=trigger,
            window_batches=window_batches,
            max_train_rows=max_train_rows,
            require_new_data=None if force else untrained_batches(config, tracking, when, window_batches),
        )
        evaluation = parts["evaluation"] = evaluate(config, tracking, trained.run_id)
        parts["decision"] = promote(config, tracking, trained.run_id, evaluation, dry_run=dry_run)
    except (BatchRejectedError, NothingToTrainError) as rejected:
        error = str(rejected)
    except Exception as failure:
        try:
            record_cycle(
                config,
                cycle_id,
                CycleParts.model_validate(parts),
                trigger=trigger,
                cutoff=when.isoformat(),
                error=f"{type(failure).__name__}: {failure}",
                started_at=started,
            )
        except Exception as unrecorded:  # e.g. the same full disk: the cycle's own failure is what to show
            log.error("the failed cycle %s could not be recorded: %s", cycle_id, unrecorded)
        raise
    return record_cycle(
        config,
        cycle_id,
        CycleParts.model_validate(parts),
        trigger=trigger,
        cutoff=when.isoformat(),
        error=error,
        started_at=started,
    )
