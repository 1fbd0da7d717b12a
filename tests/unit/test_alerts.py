"""Drift alerts: parsing, the inbox (claim, reject, never delete), and the payloads of asset events."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from retrainer import alerts

REPO = Path(__file__).resolve().parents[2]


def test_parse_fills_defaults_and_describes() -> None:
    alert = alerts.parse_alert('{"kind": "data_drift", "source": "monitor", "batch_ids": ["2013-01-07"]}')
    assert alert.kind is alerts.AlertKind.DATA_DRIFT
    assert alert.raised_at.tzinfo is not None
    assert alert.describe() == "data_drift alert from monitor on 2013-01-07"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"kind": "bogus"}', "kind"),
        ('{"sorce": "typo"}', "sorce"),
        ('{"source": ""}', "source"),
    ],
)
def test_parse_names_what_is_wrong(raw: str, named: str) -> None:
    with pytest.raises(alerts.AlertError, match=named):
        alerts.parse_alert(raw, origin="x.json")


def test_claim_takes_the_oldest_and_moves_it_to_processed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    first = alerts.drop_in_inbox(inbox, alerts.DriftAlert(source="a"))
    second = alerts.drop_in_inbox(inbox, alerts.DriftAlert(source="b"))
    os.utime(first, (1, 1))  # make the order explicit
    path, alert = alerts.claim_next(inbox)
    assert alert.source == "a" and path.parent.name == "processed" and path.read_text()
    assert not first.exists() and second.exists()
    assert alerts.claim_next(inbox)[1].source == "b"
    assert alerts.claim_next(inbox) is None


def test_claim_rejects_an_invalid_file_with_the_reason_and_keeps_it(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.json").write_text('{"kind": "bogus"}')
    (inbox / "still-writing.tmp").write_text("{")
    path, outcome = alerts.claim_next(inbox)
    assert isinstance(outcome, alerts.AlertError)
    assert path.parent.name == "rejected" and path.read_text() == '{"kind": "bogus"}'
    assert "kind" in path.with_suffix(".error.txt").read_text()
    assert alerts.claim_next(inbox) is None  # .tmp files are not alerts yet


def test_an_s3_inbox_is_claimed_in_order_and_nothing_is_deleted(s3_bucket: str) -> None:
    from retrainer import storage

    inbox = alerts.inbox_uri(f"{s3_bucket}/project")
    assert inbox == f"{s3_bucket}/project/alerts/inbox"
    first = alerts.drop_in_inbox(inbox, alerts.DriftAlert(source="a"))
    alerts.drop_in_inbox(inbox, alerts.DriftAlert(source="b"))
    storage.write_bytes(storage.join(inbox, "zz-bad.json"), b'{"kind": "bogus"}')
    path, alert = alerts.claim_next(inbox)
    assert alert.source == "a" and path.startswith(f"{inbox}/processed/") and not storage.exists(first)
    assert alerts.claim_next(inbox)[1].source == "b"
    path, outcome = alerts.claim_next(inbox)
    assert isinstance(outcome, alerts.AlertError) and path.startswith(f"{inbox}/rejected/")
    assert storage.read_bytes(path) == b'{"kind": "bogus"}'
    assert "kind" in storage.read_bytes(path.removesuffix(".json") + ".error.txt").decode()
    assert alerts.claim_next(inbox) is None


def test_claim_on_a_missing_inbox_is_empty(tmp_path: Path) -> None:
    assert alerts.claim_next(tmp_path / "nowhere") is None


def test_alerts_from_events_reads_inbox_and_rest_payloads() -> None:
    inbox_event = {"from_trigger": True, "payload": {"alert": {"source": "inbox-mon"}, "via": "inbox"}}
    rest_event = {"from_rest_api": True, "source": "grafana", "reason": "psi 0.4"}
    broken = {"from_rest_api": True, "kind": "nonsense"}
    landing_event = {"from_trigger": True, "payload": {"ids": ["2013-06-24"], "zone": "landing"}}
    inbox, rest, invalid = alerts.alerts_from_events([inbox_event, rest_event, broken, landing_event])
    assert inbox.source == "inbox-mon" and inbox.via == "inbox"
    assert rest.source == "grafana" and rest.via == "rest_api" and "psi 0.4" in rest.summary
    assert invalid.via == "rest_api" and "kind" in invalid.invalid
    # A landing watcher's event (the monitor's schedule) is not an alert, not even an invalid one: the run says
    # what it was instead.
    assert alerts.alerts_from_events([landing_event]) == []
    labels_event = {"from_trigger": True, "payload": {"ids": ["2013-06-17", "2013-06-24"], "zone": "labels"}}
    assert alerts.landing_events([inbox_event, landing_event, rest_event, labels_event]) == [
        "new batches 2013-06-24 in landing",
        "late labels 2013-06-17, 2013-06-24 in labels",
    ]
    json.dumps([a.model_dump(mode="json") for a in (inbox, rest, invalid)])  # travels through XCom


def test_inbox_trigger_yields_the_alert_and_skips_invalid_files(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "plugins"))
    from retrainer_provider.triggers.alert_inbox import AlertInboxTrigger

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "0-bad.json").write_text("nope")
    os.utime(inbox / "0-bad.json", (1, 1))
    alerts.drop_in_inbox(inbox, alerts.DriftAlert(source="mon", reason="drift"))
    trigger = AlertInboxTrigger(directory=str(inbox), poke_interval=0.01)
    assert trigger.serialize() == (
        "retrainer_provider.triggers.alert_inbox.AlertInboxTrigger",
        {"directory": str(inbox), "poke_interval": 0.01},
    )

    async def first_event():
        async for event in trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=10))
    assert event.payload["via"] == "inbox"
    assert event.payload["alert"]["source"] == "mon"
    assert next(p.name for p in (inbox / "rejected").glob("*.json")).endswith("0-bad.json")


def test_gate_suppresses_alert_retrains_within_the_cooldown(synth, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from retrainer import steps, storage

    project = synth.make_project(tmp_path / "gate", "gate")
    config = project.config  # default cooldown: 60 minutes
    alert = [alerts.ReceivedAlert(source="mon", via="rest_api", summary="external alert from mon")]
    trained = steps.CycleParts(training=_training("r0"))
    first = steps.gate_alerts(config, alert, "alert-1")
    assert first.decision == "triggered"
    # A scheduled retrain does not start the cooldown; an alert-triggered one does.
    steps.record_cycle(config, "weekly", trained, trigger="scheduled", cutoff="")
    assert steps.gate_alerts(config, alert, "alert-2").decision == "triggered"
    steps.record_cycle(config, "alert-1", trained, trigger="drift_alert", cutoff="")
    second = steps.gate_alerts(config, alert, "alert-3")
    assert second.decision == "suppressed" and "cooldown" in second.reason
    later = datetime.now(UTC) + timedelta(minutes=61)
    assert steps.gate_alerts(config, alert, "alert-4", now=later).decision == "triggered"
    # Every alert's outcome is on record.
    folder = storage.join(project.catalog.reports, "alerts")
    records = [uri for uri in storage.list_files(folder, "*.json") if not uri.endswith("last_retrain.json")]
    assert len(records) == 4
    assert json.loads(storage.read_bytes(records[2]))["decision"] == "suppressed"
    # The gate reads one pointer, not the cycle records: the cooldown holds with the records gone.
    for uri in storage.list_files(storage.join(project.catalog.reports, "cycles"), "*.json"):
        storage.delete(uri)
    assert steps.gate_alerts(config, alert, "alert-5").decision == "suppressed"


def _training(run_id: str) -> object:
    from retrainer import steps

    return steps.TrainingResult(
        run_id=run_id, model_uri="m", window=[], holdout_start="", train_rows=1, holdout_rows=1, train_metrics={}
    )


@pytest.mark.parametrize("store", ["local", "s3"])
def test_new_landings_are_announced_once_and_known_batches_never(tmp_path: Path, store: str, request) -> None:
    from retrainer import storage

    root = str(tmp_path) if store == "local" else request.getfixturevalue("s3_bucket") + "/announce"
    landing, catalog = storage.join(root, "landing"), storage.join(root, "catalog")
    announced = storage.join(root, "alerts", "announced", "landing")
    for name in ("a.parquet", "b.parquet", "notes.txt"):
        storage.write_bytes(storage.join(landing, name), b"x")
    storage.write_bytes(storage.join(catalog, "a.json"), b"{}")  # already registered
    assert alerts.announce_new_files(landing, announced, known=catalog) == ["b"]
    assert alerts.announce_new_files(landing, announced, known=catalog) == []
    storage.write_bytes(storage.join(landing, "c.PARQUET"), b"x")  # any letter case, as ingest matches
    assert alerts.announce_new_files(landing, announced, known=catalog) == ["c"]
    # A registered batch moves on to batches/: its marker goes too, so markers stay as few as waiting files.
    storage.delete(storage.join(landing, "b.parquet"))
    assert alerts.announce_new_files(landing, announced, known=catalog) == []
    assert storage.list_names(announced) == ["a", "c"]
    assert (
        alerts.announce_new_files(storage.join(root, "missing"), storage.join(root, "other"), known=catalog) == []
    )
    # Label files of registered batches are new all the same.
    storage.write_bytes(storage.join(root, "labels", "a.parquet"), b"x")
    assert alerts.announce_new_files(storage.join(root, "labels"), storage.join(root, "announced_labels")) == ["a"]


def test_alert_from_drift_only_when_the_rule_fired() -> None:
    from retrainer.steps import DriftOutcome

    computed = DriftOutcome(
        status="computed",
        drift_detected=True,
        share_drifted=0.6,
        summary="drift detected: 9/14 columns drifted",
        reference_version="3",
        report_uris=["/r/drift_report.json", "/r/drift_report.html"],
    )
    alert = alerts.alert_from_drift(computed, ["2013-01-28"])
    assert alert.kind is alerts.AlertKind.DATA_DRIFT and alert.source == "drift-monitor"
    assert alert.report_uri == "/r/drift_report.html" and alert.drift["share_drifted"] == 0.6
    assert alerts.alert_from_drift(computed.model_copy(update={"drift_detected": False}), ["x"]) is None
    assert alerts.alert_from_drift(DriftOutcome(status="no_champion", summary="-"), ["x"]) is None


def test_a_monitor_event_with_two_alerts_reads_as_two() -> None:
    data = alerts.DriftAlert(kind="data_drift", source="drift-monitor", reason="share 0.6")
    concept = alerts.DriftAlert(kind="concept_drift", source="drift-monitor", reason="rmse +9%")
    extra = {"alerts": [data.model_dump(mode="json"), concept.model_dump(mode="json")], "via": "drift-monitor"}
    read = alerts.alerts_from_events([extra])
    assert [(a.kind, a.via) for a in read] == [
        ("data_drift", "drift-monitor"),
        ("concept_drift", "drift-monitor"),
    ]
