"""Drift alerts: what an alert says, and the inbox where outside monitors drop them.

An alert asks for a retrain of one project now, instead of at the next weekly tick. It reaches Airflow as an
asset event on the project's ``drift_alert`` asset, either through the Airflow REST API or as a JSON file
dropped into the project's inbox (``<root_uri>/alerts/inbox/``), which an asset watcher claims. A claimed file
is moved to ``processed/`` (or, if it is not a valid alert, to ``rejected/`` with the reason), never deleted.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from retrainer.steps.concept import ConceptDriftResult
    from retrainer.steps.data_drift import DriftOutcome


class AlertError(ValueError):
    """An alert is not valid JSON or lacks what an alert needs."""


class AlertKind(StrEnum):
    """What the alert is about."""

    DATA_DRIFT = "data_drift"
    CONCEPT_DRIFT = "concept_drift"
    EXTERNAL = "external"


class DriftAlert(BaseModel):
    """One alert.

    Attributes:
        kind: Data drift, concept drift (the champion's error grew), or an external monitor's own reason.
        source: Who raised it (e.g. ``drift-monitor``, ``grafana``, ``on-call``).
        reason: One line a person can read in the Airflow UI.
        batch_ids: The batches that showed the drift, if known.
        drift: A machine-readable drift summary, if the source has one.
        report_uri: Where the full report is, if anywhere.
        raised_at: When the alert was raised (UTC).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: AlertKind = AlertKind.EXTERNAL
    source: str = Field(default="external", min_length=1)
    reason: str = ""
    batch_ids: list[str] = Field(default_factory=list)
    drift: dict[str, Any] | None = None
    report_uri: str | None = None
    raised_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def describe(self) -> str:
        """One line for logs and the UI."""
        batches = f" on {', '.join(self.batch_ids)}" if self.batch_ids else ""
        return f"{self.kind.value} alert from {self.source}{batches}" + (f": {self.reason}" if self.reason else "")


class ReceivedAlert(BaseModel):
    """An alert as a run received it: the alert's fields, how it came, and a readable summary.

    An event whose payload is not a valid alert still asked for a retrain: it is kept, with ``invalid``
    saying why, instead of being dropped.

    Attributes:
        via: ``rest_api``, ``inbox`` or ``drift-monitor``.
        summary: One line for logs and the UI.
        invalid: Why the payload is not a valid alert, None when it is.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    via: str
    summary: str
    invalid: str | None = None
    kind: AlertKind | None = None
    source: str | None = None
    reason: str = ""
    batch_ids: list[str] = Field(default_factory=list)
    drift: dict[str, Any] | None = None
    report_uri: str | None = None
    raised_at: datetime | None = None


def parse_alert(raw: str | bytes | dict[str, Any], origin: str = "alert") -> DriftAlert:
    """Validate an alert from JSON text or a mapping.

    Raises:
        AlertError: Not JSON, not an object, or a field is wrong (the message names it).
    """
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise AlertError(f"{origin} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise AlertError(f"{origin} must be a JSON object, got {type(raw).__name__}")
    try:
        return DriftAlert.model_validate(raw)
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in error.errors())
        raise AlertError(f"{origin} is not a valid alert: {fields}") from None


def inbox_uri(root_uri: str) -> str:
    """The alert inbox of a project: ``<root_uri>/alerts/inbox``, a local folder or an S3 prefix."""
    from retrainer import storage

    return storage.join(root_uri, "alerts", "inbox")


def inbox_folder(root_uri: str) -> Path:
    """The alert inbox of a project whose batch store is the local folder ``root_uri``."""
    return Path(inbox_uri(root_uri))


def claim_next(inbox: Path | str) -> tuple[Path | str, DriftAlert | AlertError] | None:
    """Take the oldest ``*.json`` file out of the inbox (a local folder, or an S3 prefix: see ``_claim_next_s3``).

    The file is moved (same file system, atomic) to ``processed/`` when it is a valid alert, or to
    ``rejected/`` beside a ``.error.txt`` naming what is wrong. Files still being written should be dropped
    under another name (e.g. ``.tmp``) and renamed to ``.json`` when complete.

    Returns:
        Where the file now is and the alert (or the error), or None when the inbox is empty.
    """
    if str(inbox).startswith("s3://"):
        return _claim_next_s3(str(inbox))
    inbox = Path(inbox)
    if not inbox.is_dir():
        return None
    candidates = sorted(inbox.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    for path in candidates:
        try:
            content = path.read_bytes()
        except FileNotFoundError:  # claimed by someone else meanwhile
            continue
        try:
            outcome: DriftAlert | AlertError = parse_alert(content, origin=path.name)
            folder = inbox / "processed"
        except AlertError as error:
            outcome, folder = error, inbox / "rejected"
        folder.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = folder / f"{stamp}-{path.name}"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            continue
        if isinstance(outcome, AlertError):
            target.with_suffix(".error.txt").write_text(f"{outcome}\n")
        return target, outcome
    return None


def _claim_next_s3(inbox: str) -> tuple[str, DriftAlert | AlertError] | None:
    """``claim_next`` for an S3 prefix: the first object by name (``drop_in_inbox`` names start with the time).

    An object is moved by copy, check, then delete (``storage.move``); a PUT is atomic, so no temporary name
    is needed. One triggerer watches an inbox, so nobody else claims the same object meanwhile.
    """
    from retrainer import storage

    for uri in storage.list_files(inbox, "*.json"):
        name = storage.basename(uri)
        try:
            outcome: DriftAlert | AlertError = parse_alert(storage.read_bytes(uri), origin=name)
            folder = "processed"
        except AlertError as error:
            outcome, folder = error, "rejected"
        except storage.StorageError:  # gone meanwhile
            continue
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = storage.join(inbox, folder, f"{stamp}-{name}")
        if isinstance(outcome, AlertError):
            storage.write_bytes(target.removesuffix(".json") + ".error.txt", f"{outcome}\n".encode())
        storage.move(uri, target)
        return target, outcome
    return None


def alerts_from_events(extras: list[dict[str, Any]]) -> list[ReceivedAlert]:
    """Readable alerts from the ``extra`` of the asset events that started a run.

    An inbox event carries ``{"payload": {"alert": {...}, "via": "inbox"}}``, a drift monitor's event
    ``{"alerts": [...], "via": "drift-monitor"}``; an event posted through the REST API carries the alert's
    fields directly. Events of other assets (a landing watcher's ``{"ids": [...], "zone": ...}``) are not
    alerts and are left out.
    """
    alerts: list[ReceivedAlert] = []
    for extra in extras:
        payload = extra.get("payload", extra) if isinstance(extra, dict) else {}
        if isinstance(payload, dict) and "zone" in payload and "ids" in payload:
            continue  # a landing or labels watcher's event: the monitor's own schedule, not an alert
        via = payload.get("via", "rest_api") if isinstance(payload, dict) else "rest_api"
        if isinstance(payload, dict) and isinstance(payload.get("alerts"), list):
            alerts += alerts_from_events([{"alert": raw, "via": via} for raw in payload["alerts"]])
            continue
        raw = payload.get("alert", payload) if isinstance(payload, dict) else payload
        if isinstance(raw, dict):  # drop Airflow's own markers (from_rest_api, from_trigger) and ours
            raw = {k: v for k, v in raw.items() if k != "via" and not k.startswith("from_")}
        try:
            alert = parse_alert(raw, origin=f"alert via {via}")
        except AlertError as error:
            alerts.append(ReceivedAlert(via=via, invalid=str(error), summary=f"invalid alert via {via}"))
            continue
        alerts.append(ReceivedAlert(**alert.model_dump(), via=via, summary=alert.describe()))
    return alerts


def landing_events(extras: list[dict[str, Any]]) -> list[str]:
    """What the landing and labels watchers announced in the events that started a run, one phrase each:
    ``new batches 2013-06-24 in landing``, ``late labels 2013-06-17 in labels`` (alerts are left out)."""
    found = []
    for extra in extras:
        payload = extra.get("payload", extra) if isinstance(extra, dict) else {}
        if isinstance(payload, dict) and "zone" in payload and isinstance(payload.get("ids"), list):
            what = "late labels" if payload["zone"] == "labels" else "new batches"
            found.append(f"{what} {', '.join(map(str, payload['ids']))} in {payload['zone']}")
    return found


def asset_uri(project_name: str) -> str:
    """The URI of a project's drift-alert asset in Airflow (``POST /api/v2/assets/events`` needs its id)."""
    return f"retrainer://{project_name}/drift-alert"


def drop_in_inbox(inbox: Path | str, alert: DriftAlert) -> Path | str:
    """Write an alert into an inbox atomically (locally a temporary name, then renamed to ``.json``)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    if str(inbox).startswith("s3://"):
        from retrainer import storage

        uri = storage.join(str(inbox), f"{stamp}-{alert.source}.json")
        storage.write_bytes(uri, alert.model_dump_json(indent=2).encode(), overwrite=False)
        return uri
    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    final = inbox / f"{stamp}-{alert.source}.json"
    partial = final.with_suffix(".tmp")
    partial.write_text(alert.model_dump_json(indent=2))
    os.replace(partial, final)
    return final


def announce_new_files(
    folder: str, announced: str, pattern: str = "*.parquet", known: str | None = None
) -> list[str]:
    """Ids (names without suffix) of files in ``folder`` that nobody announced yet, nor ``known`` lists.

    Each is marked in ``announced`` so that a file starts the drift monitor once, even if the monitor handles it
    only later; a marker whose file has left the folder (registered batches move on to ``batches/``) is removed,
    so the markers stay as few as the files waiting. ``known`` is the catalog folder for batches (``<id>.json``
    per registered batch): a file there is not new. Folders are local paths or S3 prefixes.
    """
    import fnmatch

    from retrainer import storage

    # In any letter case, as ingest matches them (a `.PARQUET` file is a batch too).
    names = [storage.basename(uri) for uri in storage.list_files(folder)]
    present = {name.rsplit(".", 1)[0] for name in names if fnmatch.fnmatchcase(name.lower(), pattern.lower())}
    markers = set(storage.list_names(announced))
    for file_id in sorted(markers - present):
        storage.delete(storage.join(announced, file_id))
    new = []
    for file_id in sorted(present - markers):
        storage.write_bytes(storage.join(announced, file_id), b"")
        if known is None or not storage.exists(storage.join(known, f"{file_id}.json")):
            new.append(file_id)
    return new


def alert_from_drift(result: DriftOutcome, batch_ids: list[str]) -> DriftAlert | None:
    """The data-drift alert of a drift step's result, or None when the project's drift rule did not fire."""
    if result.status != "computed" or not result.drift_detected:
        return None
    reports = [uri for uri in result.report_uris if uri.endswith(".html")]
    return DriftAlert(
        kind=AlertKind.DATA_DRIFT,
        source="drift-monitor",
        reason=result.summary,
        batch_ids=batch_ids,
        drift={"share_drifted": result.share_drifted, "reference_version": result.reference_version},
        report_uri=reports[0] if reports else None,
    )


def alert_from_concept(result: ConceptDriftResult) -> DriftAlert | None:
    """The concept-drift alert of a concept-drift step's result, or None when the champion held up."""
    degraded = [c for c in result.checks if c.degraded]
    if not degraded:
        return None
    return DriftAlert(
        kind=AlertKind.CONCEPT_DRIFT,
        source="drift-monitor",
        reason="; ".join(c.note for c in degraded),
        batch_ids=[c.batch_id for c in degraded],
        drift={
            "metric": degraded[0].metric,
            "champion_version": degraded[0].champion_version,
            "degradation": max(c.degradation or 0.0 for c in degraded),
            "max_degradation": degraded[0].max_degradation,
        },
        report_uri=degraded[0].report_uri,
    )
