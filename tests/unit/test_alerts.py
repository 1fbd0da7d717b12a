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


def test_claim_on_a_missing_inbox_is_empty(tmp_path: Path) -> None:
    assert alerts.claim_next(tmp_path / "nowhere") is None


def test_alerts_from_events_reads_inbox_and_rest_payloads() -> None:
    inbox_event = {"from_trigger": True, "payload": {"alert": {"source": "inbox-mon"}, "via": "inbox"}}
    rest_event = {"from_rest_api": True, "source": "grafana", "reason": "psi 0.4"}
    broken = {"from_rest_api": True, "kind": "nonsense"}
    inbox, rest, invalid = alerts.alerts_from_events([inbox_event, rest_event, broken])
    assert inbox["source"] == "inbox-mon" and inbox["via"] == "inbox"
    assert rest["source"] == "grafana" and rest["via"] == "rest_api" and "psi 0.4" in rest["summary"]
    assert invalid["via"] == "rest_api" and "kind" in invalid["invalid"]
    json.dumps([inbox, rest, invalid])  # travels through XCom


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
