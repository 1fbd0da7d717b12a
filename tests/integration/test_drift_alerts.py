"""External drift alerts start a retrain, through the real scheduler and triggerer.

A real stack runs the repo's DAG on a project copy whose schedule has no tick in range, so every run here is
started by an alert: one posted through the Airflow REST API, one dropped as a file into the project's inbox
(claimed by the AlertInboxTrigger in the triggerer, no worker slot held). An invalid file is rejected with its
reason and starts nothing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrainer import alerts, demo
from retrainer.airflow_api import AirflowClient
from retrainer.config import load_config
from retrainer.stack import REPO_ROOT, StackStatus, start_stack, stop_stack

from .conftest import temporary_stack, write_manual_project

pytestmark = pytest.mark.integration

PROJECT = "it_alerts"
DAG_ID = f"retrain_{PROJECT}"
MODEL = "it_alerts_arr_delay"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alerts")
    path = write_manual_project(root, PROJECT, MODEL)
    shutil.copytree(REPO_ROOT / "great_expectations", root / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    demo.land_weeks(load_config(path), demo.DEMO_START, 2)
    return path


@pytest.fixture(scope="module")
def client(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowClient]:
    settings = temporary_stack(tmp_path_factory.mktemp("stack"), REPO_ROOT / "dags", REPO_ROOT / "plugins")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETRAINER_PROJECTS_DIR", str(project.parent))
        patch.setenv("RETRAINER_GX_ROOT", str(project.parent.parent / "gx"))
        try:
            status: StackStatus = start_stack(settings, timeout=240)
            with AirflowClient(status.airflow_api_url, status.username, status.password or "") as api:
                api.wait_until_dag_parsed(DAG_ID, timeout=180)
                api.unpause(DAG_ID)  # the inbox watcher registers only while the DAG is unpaused
                yield api
        finally:
            stop_stack(settings)


def _next_alert_run(client: AirflowClient, seen: int, timeout: float = 120) -> tuple[dict[str, Any], float]:
    """Wait for alert-triggered run number ``seen + 1`` to start, then to finish."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        runs = client.list_dag_runs(DAG_ID, run_type="asset_triggered")
        if len(runs) > seen:
            latency = time.monotonic() - started
            return client.wait_for_dag_run(DAG_ID, runs[-1]["dag_run_id"], timeout=600), latency
        time.sleep(0.5)
    raise AssertionError(f"no alert-triggered run of {DAG_ID} within {timeout} s")


def test_alert_through_the_rest_api_starts_a_retrain(client: AirflowClient) -> None:
    alert = {"kind": "data_drift", "source": "it-rest", "reason": "share of drifted columns 0.8"}
    client.create_asset_event(alerts.asset_uri(PROJECT), alert)
    run, latency = _next_alert_run(client, 0)
    print(f"REST alert -> run created in {latency:.1f} s")
    assert run["state"] == "success", client.task_instances(DAG_ID, run["dag_run_id"])
    ingested = client.xcom(DAG_ID, run["dag_run_id"], "ingest")
    assert ingested["trigger"] == "drift_alert"
    [recorded] = ingested["alerts"]
    assert recorded["source"] == "it-rest" and recorded["via"] == "rest_api"
    assert client.xcom(DAG_ID, run["dag_run_id"], "promote")["verdict"] == "promoted"


def test_alert_dropped_into_the_inbox_starts_a_retrain(client: AirflowClient, project: Path) -> None:
    inbox = alerts.inbox_folder(load_config(project).data.root_uri)
    dropped = alerts.drop_in_inbox(inbox, alerts.DriftAlert(source="it-inbox", reason="p95 latency of errors"))
    run, latency = _next_alert_run(client, 1)
    print(f"inbox alert -> run created in {latency:.1f} s")
    assert run["state"] == "success", client.task_instances(DAG_ID, run["dag_run_id"])
    [recorded] = client.xcom(DAG_ID, run["dag_run_id"], "ingest")["alerts"]
    assert recorded["source"] == "it-inbox" and recorded["via"] == "inbox"
    # An alert forces a retrain although no new batch arrived since the first run.
    assert client.xcom(DAG_ID, run["dag_run_id"], "train")["run_id"]
    assert not dropped.exists()
    assert any(p.name.endswith(dropped.name) for p in (inbox / "processed").iterdir())


def test_an_invalid_inbox_file_is_rejected_and_starts_nothing(client: AirflowClient, project: Path) -> None:
    inbox = alerts.inbox_folder(load_config(project).data.root_uri)
    (inbox / "broken.json").write_text('{"kind": "bogus"}')
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (inbox / "rejected").is_dir():
        time.sleep(0.5)
    [error_file] = (inbox / "rejected").glob("*.error.txt")
    assert "kind" in error_file.read_text()
    time.sleep(5)
    assert len(client.list_dag_runs(DAG_ID, run_type="asset_triggered")) == 2
