"""External drift alerts start a retrain, through the real scheduler and triggerer.

A real stack runs the repo's DAG on a project copy whose schedule has no tick in range, so every run here is
started by an alert: one posted through the Airflow REST API, one dropped as a file into the project's inbox
(claimed by the AlertInboxTrigger in the triggerer, no worker slot held). An invalid file is rejected with its
reason and starts nothing.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrainer import alerts, demo
from retrainer.airflow_api import AirflowClient
from retrainer.config import load_config
from retrainer.stack import REPO_ROOT
from tests.helpers import wait_until

from .conftest import project_stack, write_manual_project

pytestmark = pytest.mark.integration

PROJECT = "it_alerts"
DAG_ID = f"retrain_{PROJECT}"
MODEL = "it_alerts_arr_delay"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alerts")
    path = write_manual_project(root, PROJECT, MODEL)
    _set_cooldown(path, 30)
    shutil.copytree(REPO_ROOT / "great_expectations", root / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    demo.land_weeks(load_config(path), demo.DEMO_START, 2)
    return path


@pytest.fixture(scope="module")
def client(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowClient]:
    with (
        project_stack(tmp_path_factory, project.parent, project.parent.parent / "gx") as status,
        AirflowClient(status.airflow_api_url, status.username, status.password or "") as api,
    ):
        api.wait_until_dag_parsed(DAG_ID, timeout=180)
        api.unpause(DAG_ID)  # the inbox watcher registers only while the DAG is unpaused
        yield api


def _set_cooldown(path: Path, minutes: float) -> None:
    """Tasks read the project file when they run, so the policy can change between tests."""
    raw = yaml.safe_load(path.read_text())
    raw["alerts"] = {"cooldown_minutes": minutes}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _alert_runs(client: AirflowClient) -> list[dict[str, Any]]:
    return client.list_dag_runs(DAG_ID, run_type="asset_triggered")


def _next_alert_run(client: AirflowClient, seen: int, timeout: float = 120) -> tuple[dict[str, Any], float]:
    """Wait for alert-triggered run number ``seen + 1`` to start, then to finish."""
    started = time.monotonic()
    runs = wait_until(
        lambda: (runs := _alert_runs(client))[seen:] and runs,
        timeout=timeout,
        what=f"alert-triggered run {seen + 1} of {DAG_ID}",
    )
    latency = time.monotonic() - started
    return client.wait_for_dag_run(DAG_ID, runs[-1]["dag_run_id"], timeout=600), latency


def _alert_events(client: AirflowClient) -> int:
    """Events on the project's drift-alert asset so far (every alert that was raised, however it was raised)."""
    asset_id = client.asset_id(alerts.asset_uri(PROJECT))
    return client._get_json("/api/v2/assets/events", {"asset_id": asset_id, "limit": 1})["total_entries"]


def _settled_alert_runs(client: AirflowClient) -> list[dict[str, Any]] | None:
    """The alert runs once none is queued, running or still to be created (no asset event waits for the DAG)."""
    queued = client._get_json(f"/api/v2/dags/{DAG_ID}/assets/queuedEvents")["total_entries"]
    runs = _alert_runs(client)
    return runs if queued == 0 and all(r["state"] in ("success", "failed") for r in runs) else None


def test_a_burst_of_five_alerts_starts_one_retrain(client: AirflowClient, project: Path) -> None:
    for i in range(5):
        client.create_asset_event(alerts.asset_uri(PROJECT), {"source": f"burst-{i}", "reason": "flapping"})
    first, _ = _next_alert_run(client, 0)
    assert first["state"] == "success"
    # Alerts queued during the first run start (at most) one more run after it: wait until none is left queued.
    runs = wait_until(lambda: _settled_alert_runs(client), timeout=600, what="the burst's alert runs to finish")
    retrained = [r for r in runs if client.xcom(DAG_ID, r["dag_run_id"], "train")]
    assert len(retrained) == 1, [(r["dag_run_id"], r["state"]) for r in runs]
    states = {
        ti["task_id"]: ti["state"]
        for r in runs
        if r is not retrained[0]
        for ti in client.task_instances(DAG_ID, r["dag_run_id"])
    }
    if states:  # the suppressed runs skipped everything but their record
        assert states["gate"] == "skipped" and states["train"] == "skipped" and states["record"] == "success"
    # Each run's alerts are on record with the outcome and why; Airflow keeps every event (none is lost).
    folder = project.parent.parent / "data" / "reports" / "alerts"
    # One outcome per run (beside the pointer to the last alert retrain, which the cooldown reads).
    outcomes = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "last_retrain.json"]
    assert len(outcomes) == len(runs)
    assert [o["decision"] for o in outcomes].count("triggered") == 1
    assert all("cooldown" in o["reason"] for o in outcomes if o["decision"] == "suppressed")
    assert _alert_events(client) == 5
    recorded = sum(len(o["alerts"]) for o in outcomes)
    assert 1 <= recorded <= 5  # the rest are consumed by the next alert run (see the next test)


def test_alert_through_the_rest_api_starts_a_retrain(client: AirflowClient, project: Path) -> None:
    _set_cooldown(project, 0)
    seen = len(_alert_runs(client))
    alert = {"kind": "data_drift", "source": "it-rest", "reason": "share of drifted columns 0.8"}
    client.create_asset_event(alerts.asset_uri(PROJECT), alert)
    run, latency = _next_alert_run(client, seen)
    print(f"REST alert -> run created in {latency:.1f} s")
    assert run["state"] == "success", client.task_instances(DAG_ID, run["dag_run_id"])
    ingested = client.xcom(DAG_ID, run["dag_run_id"], "ingest")
    assert ingested["trigger"] == "drift_alert"
    # Burst alerts Airflow coalesced while creating the first run are consumed here: none is lost.
    recorded = {alert["source"]: alert for alert in ingested["alerts"]}
    assert recorded["it-rest"]["via"] == "rest_api"
    assert client.xcom(DAG_ID, run["dag_run_id"], "promote")["verdict"] in {"promoted", "rejected"}


def test_alert_dropped_into_the_inbox_starts_a_retrain(client: AirflowClient, project: Path) -> None:
    inbox = alerts.inbox_folder(load_config(project).data.root_uri)
    seen = len(_alert_runs(client))
    dropped = alerts.drop_in_inbox(inbox, alerts.DriftAlert(source="it-inbox", reason="p95 latency of errors"))
    run, latency = _next_alert_run(client, seen)
    print(f"inbox alert -> run created in {latency:.1f} s")
    assert run["state"] == "success", client.task_instances(DAG_ID, run["dag_run_id"])
    recorded = {alert["source"]: alert for alert in client.xcom(DAG_ID, run["dag_run_id"], "ingest")["alerts"]}
    assert recorded["it-inbox"]["via"] == "inbox"
    # An alert forces a retrain although no new batch arrived since the first run.
    assert client.xcom(DAG_ID, run["dag_run_id"], "train")["run_id"]
    assert not dropped.exists()
    assert any(p.name.endswith(dropped.name) for p in (inbox / "processed").iterdir())


def test_an_invalid_inbox_file_is_rejected_and_starts_nothing(client: AirflowClient, project: Path) -> None:
    inbox = alerts.inbox_folder(load_config(project).data.root_uri)
    seen, events = len(_alert_runs(client)), _alert_events(client)
    (inbox / "broken.json").write_text('{"kind": "bogus"}')
    [error_file] = wait_until(
        lambda: list((inbox / "rejected").glob("*.error.txt")), timeout=60, what="the invalid file's rejection"
    )
    assert "kind" in error_file.read_text()
    # The watcher fires an event for a valid alert only: a rejected file raised none, so no run can follow.
    assert _alert_events(client) == events and len(_alert_runs(client)) == seen


def test_a_weekly_retrain_and_an_alert_retrain_run_one_after_the_other(client: AirflowClient) -> None:
    seen = len(_alert_runs(client))
    manual = client.trigger(DAG_ID, conf={"force": True})  # stands in for the weekly run, due at the same time
    client.create_asset_event(alerts.asset_uri(PROJECT), {"source": "it-together", "reason": "same time"})
    alert_run, _ = _next_alert_run(client, seen)
    manual_run = client.wait_for_dag_run(DAG_ID, manual, timeout=600)
    assert manual_run["state"] == alert_run["state"] == "success"
    first, second = sorted([manual_run, alert_run], key=lambda r: r["start_date"])
    assert first["end_date"] <= second["start_date"], "two retrains of one model ran at once"


# -- the drift monitor: batches land -> validate -> drift -> alert -> retrain ---------------------------------
MONITOR = f"monitor_{PROJECT}"


def _week_copy(project: Path, shift_days: int) -> Any:
    """The demo's second week with timestamps moved: the same distribution the champion trained on."""
    import pandas as pd

    config = load_config(project)
    frame = demo.week_frame(
        demo.flights_with_weather(), demo.week_starts(demo.DEMO_START, 2)[1], list(config.schema_.columns)
    )
    frame["time_hour"] = frame["time_hour"] + pd.Timedelta(days=shift_days)
    return frame


def _next_monitor_run(client: AirflowClient, seen: int, timeout: float = 120) -> dict[str, Any]:
    runs = wait_until(
        lambda: (runs := client.list_dag_runs(MONITOR))[seen:] and runs,
        timeout=timeout,
        what="the monitor's start after a batch landed",
    )
    return client.wait_for_dag_run(MONITOR, runs[-1]["dag_run_id"], timeout=600)


def test_monitor_raises_no_alert_for_a_batch_without_drift(client: AirflowClient, project: Path) -> None:
    from retrainer.catalog import Catalog

    client.unpause(MONITOR)
    seen_alerts, events = len(_alert_runs(client)), _alert_events(client)
    Catalog(load_config(project)).land("2013-01-21", _week_copy(project, 7))
    run = _next_monitor_run(client, 0)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(MONITOR, run["dag_run_id"])}
    assert run["state"] == "success" and states["validate"] == "success", states
    assert states["raise_alert"] == "skipped"
    # A skipped raise_alert emits no event on its outlet, so no retrain can follow.
    assert _alert_events(client) == events and len(_alert_runs(client)) == seen_alerts
    # The run says what started it (the landing, never "an invalid alert") and what it found.
    ingest_log = client.task_log(MONITOR, run["dag_run_id"], "ingest")
    assert "started by new batches 2013-01-21 in landing" in ingest_log and "invalid alert" not in ingest_log
    assert client.get_dag_run(MONITOR, run["dag_run_id"])["note"].startswith("no alert")


def test_monitor_alerts_on_a_drifted_batch_and_a_retrain_follows(client: AirflowClient, project: Path) -> None:
    from retrainer.catalog import Catalog

    seen_alerts = len(_alert_runs(client))
    drifted = _week_copy(project, 14)
    drifted["dep_delay"] = drifted["dep_delay"] + 90  # a key feature of the demo's drift rule
    drifted["temp"] = drifted["temp"] + 35
    Catalog(load_config(project)).land("2013-01-28", drifted)
    run = _next_monitor_run(client, 1)
    assert run["state"] == "success"
    [alert] = client.xcom(MONITOR, run["dag_run_id"], "raise_alert")["alerts"]
    assert alert["kind"] == "data_drift" and alert["batch_ids"] == ["2013-01-28"]
    assert client.get_dag_run(MONITOR, run["dag_run_id"])["note"].startswith("drift alert raised: ")
    retrain, latency = _next_alert_run(client, seen_alerts)
    print(f"drift alert -> retrain run created in {latency:.1f} s")
    assert retrain["state"] == "success"
    recorded = client.xcom(DAG_ID, retrain["dag_run_id"], "ingest")["alerts"]
    assert [a["source"] for a in recorded] == ["drift-monitor"]
    assert "2013-01-28" in client.xcom(DAG_ID, retrain["dag_run_id"], "train")["window"]


def test_late_labels_showing_a_worse_champion_raise_a_concept_drift_alert(
    client: AirflowClient, project: Path
) -> None:
    import numpy as np

    from retrainer.catalog import Catalog

    catalog = Catalog(load_config(project))
    frame = _week_copy(project, 21)
    late = frame["time_hour"] >= frame["time_hour"].quantile(0.8)  # the newest flights have not arrived yet
    labels = frame[["arr_delay"]].where(late, np.nan) + 40.0  # ... and when they do, all are 40 min later
    frame.loc[late, "arr_delay"] = np.nan
    seen_alerts = len(_alert_runs(client))
    catalog.land("2013-02-04", frame)
    run = _next_monitor_run(client, 2)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(MONITOR, run["dag_run_id"])}
    assert states["validate"] == "success" and states["concept"] == "success", states
    if states["raise_alert"] == "success":  # data drift against the champion trained on the drifted week
        _next_alert_run(client, seen_alerts)
        seen_alerts += 1
    catalog.land_labels("2013-02-04", labels)
    run = _next_monitor_run(client, 3)
    judged = client.xcom(MONITOR, run["dag_run_id"], "concept")
    [check] = judged["checks"]
    assert check["degraded"] is True and check["rows"] == int(labels["arr_delay"].notna().sum()), check
    [alert] = client.xcom(MONITOR, run["dag_run_id"], "raise_alert")["alerts"]
    assert alert["kind"] == "concept_drift" and alert["batch_ids"] == ["2013-02-04"]
    retrain, _ = _next_alert_run(client, seen_alerts)
    assert retrain["state"] == "success"
    [recorded] = client.xcom(DAG_ID, retrain["dag_run_id"], "ingest")["alerts"]
    assert recorded["kind"] == "concept_drift" and recorded["via"] == "drift-monitor"
