"""Gate: whether the alerts that started a run may retrain now (the cooldown), each alert's outcome recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from retrainer import storage
from retrainer.alerts import ReceivedAlert
from retrainer.catalog import Catalog
from retrainer.steps.common import StepResult, parse_cutoff, safe_id

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig

GateDecision = Literal["triggered", "suppressed", "not_an_alert"]


class GateOutcome(StepResult):
    """What the gate decided for a run.

    Attributes:
        decision: ``triggered`` (the alerts retrain now), ``suppressed`` (cooldown) or ``not_an_alert``.
        reason: Why, in one line.
        trigger: Why the run started (for runs that are not alert-triggered).
        cycle_id: The run.
        decided_at: When.
        alerts: The alerts of the run.
    """

    decision: GateDecision
    reason: str = ""
    trigger: str = ""
    cycle_id: str = ""
    decided_at: datetime | None = None
    alerts: list[ReceivedAlert] = Field(default_factory=list)


def last_alert_retrain_uri(config: ProjectConfig) -> str:
    """The pointer to the project's last alert-triggered retrain (written by ``record_cycle``)."""
    return storage.join(Catalog(config).reports, "alerts", "last_retrain.json")


def last_alert_retrain(config: ProjectConfig) -> datetime | None:
    """When the last alert-triggered retrain of the project was recorded, None if there was none.

    One small object is read, whatever the project's history; cycle records written before the pointer
    existed are scanned once instead.
    """
    pointer = last_alert_retrain_uri(config)
    if storage.exists(pointer):
        return parse_cutoff(json.loads(storage.read_bytes(pointer))["recorded_at"])
    last = None
    for uri in storage.list_files(storage.join(Catalog(config).reports, "cycles"), "*.json"):
        record = json.loads(storage.read_bytes(uri))
        if record.get("trigger") == "drift_alert" and record.get("training"):
            when = parse_cutoff(record["recorded_at"])
            last = when if last is None or when > last else last
    return last


def gate_alerts(
    config: ProjectConfig, alerts: list[ReceivedAlert], cycle_id: str, now: datetime | None = None
) -> GateOutcome:
    """Decide whether the alerts that started a run may retrain now, and record every alert's outcome.

    A retrain started by an alert is suppressed when the last alert-triggered retrain of the project happened
    less than ``alerts.cooldown_minutes`` ago. The outcome of each alert, triggered or suppressed and why, is
    written to ``reports/alerts/<cycle_id>.json``.
    """
    now = now or datetime.now(UTC)
    cooldown = timedelta(minutes=config.alerts.cooldown_minutes)
    last = last_alert_retrain(config)
    if last is not None and now - last < cooldown:
        decision: GateDecision = "suppressed"
        reason = (
            f"cooldown: the last alert-triggered retrain ended at {last.isoformat(timespec='seconds')}, "
            f"less than {config.alerts.cooldown_minutes:g} min ago"
        )
    else:
        decision, reason = "triggered", f"{len(alerts)} alert(s) start one retrain"
    outcome = GateOutcome(
        decision=decision,
        reason=reason,
        trigger="drift_alert",
        cycle_id=cycle_id,
        decided_at=now.replace(microsecond=0),
        alerts=alerts,
    )
    target = storage.join(Catalog(config).reports, "alerts", f"{safe_id(cycle_id)}.json")
    storage.write_bytes(target, json.dumps(outcome.to_json(), indent=2).encode())
    return outcome


def outcome_of(config: ProjectConfig, cycle_id: str) -> GateOutcome | None:
    """The gate's recorded outcome of a run (a suppressed gate skips its task, so it returns nothing)."""
    uri = storage.join(Catalog(config).reports, "alerts", f"{safe_id(cycle_id)}.json")
    return GateOutcome.model_validate_json(storage.read_bytes(uri)) if storage.exists(uri) else None
