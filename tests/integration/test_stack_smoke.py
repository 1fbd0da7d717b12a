"""End to end: the embedded stack starts, runs a DAG through the real scheduler, and stops without leftovers.

Starts Airflow (api-server, scheduler, dag-processor, triggerer) and MLflow on free ports in a temporary state
folder, with a temporary DAGs folder holding two small DAGs written here. Takes about a minute.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from retrainer.airflow_api import AirflowClient
from retrainer.stack import COMPONENTS, StackSettings, StackStatus, port_in_use, start_stack, stop_stack

from .conftest import temporary_stack

pytestmark = pytest.mark.integration

MARKER = "passed-through"

SMOKE_DAG = """
from __future__ import annotations

import os
import urllib.request
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="stack_smoke", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["test"])
def stack_smoke():
    @task
    def read_env() -> dict:
        return {
            "tracking_uri": os.environ["MLFLOW_TRACKING_URI"],
            "mlflow_conn": os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"],
            "marker": os.environ.get("RETRAINER_SMOKE_MARKER", ""),
        }

    @task
    def ping_mlflow(env: dict) -> dict:
        with urllib.request.urlopen(env["tracking_uri"] + "/health", timeout=10) as response:
            return {**env, "mlflow_health": response.status}

    ping_mlflow(read_env())


stack_smoke()
"""

DAILY_DAG = """
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="stack_daily", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False, tags=["test"])
def stack_daily():
    @task
    def noop() -> None:
        return None

    noop()


stack_daily()
"""


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> StackSettings:
    root = tmp_path_factory.mktemp("stack")
    dags = root / "dags"
    dags.mkdir()
    (dags / "stack_smoke.py").write_text(textwrap.dedent(SMOKE_DAG))
    (dags / "stack_daily.py").write_text(textwrap.dedent(DAILY_DAG))
    (root / "plugins").mkdir()
    return temporary_stack(root, dags, root / "plugins")


@pytest.fixture(scope="module")
def running(settings: StackSettings) -> Iterator[StackStatus]:
    previous = os.environ.get("RETRAINER_SMOKE_MARKER")
    os.environ["RETRAINER_SMOKE_MARKER"] = MARKER
    try:
        started = time.monotonic()
        status = start_stack(settings, timeout=240)
        print(f"stack healthy after {time.monotonic() - started:.1f} s")
        yield status
    finally:
        stop_stack(settings)
        if previous is None:
            os.environ.pop("RETRAINER_SMOKE_MARKER", None)
        else:
            os.environ["RETRAINER_SMOKE_MARKER"] = previous


@pytest.fixture(scope="module")
def client(running: StackStatus) -> Iterator[AirflowClient]:
    assert running.password
    with AirflowClient(running.airflow_api_url, running.username, running.password, poll_interval=1.0) as api:
        yield api


def test_stack_is_healthy(running: StackStatus) -> None:
    assert running.healthy, running
    assert sorted(running.running) == sorted(COMPONENTS)
    assert httpx.get(f"{running.mlflow_url}/health", timeout=5).status_code == 200


def test_mlflow_and_the_airflow_api_refuse_requests_without_credentials(running: StackStatus) -> None:
    search = f"{running.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, timeout=10).status_code == 401
    assert httpx.get(f"{running.mlflow_url}/", timeout=10).status_code == 401  # the UI asks for a login too
    assert httpx.get(search, auth=("admin", "wrong"), timeout=10).status_code == 401
    assert httpx.get(search, auth=("admin", running.mlflow_password or ""), timeout=10).status_code == 200
    assert httpx.get(f"{running.airflow_api_url}/api/v2/dags", timeout=10).status_code == 401
    forged = {"Authorization": "Bearer not-a-token"}
    refused = httpx.get(f"{running.airflow_api_url}/api/v2/dags", headers=forged, timeout=10).status_code
    assert refused == 403  # Airflow's answer to a token it did not sign


def test_every_server_of_the_stack_listens_on_loopback_only(settings: StackSettings, running: StackStatus) -> None:
    pids = {json.loads(path.read_text())["pid"] for path in settings.run_dir.glob("*.pid")}
    processes = [psutil.Process(pid) for pid in pids]
    processes += [child for process in list(processes) for child in process.children(recursive=True)]
    listening = {
        (process.name(), connection.laddr.ip, connection.laddr.port)
        for process in processes
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    }
    ports = {port for _, _, port in listening}
    wanted = {settings.airflow_port, settings.mlflow_port, settings.worker_log_port, settings.trigger_log_port}
    assert wanted <= ports, listening
    assert {ip for _, ip, _ in listening} == {"127.0.0.1"}, listening
    # The log servers are Airflow's own app: a request without the API server's signed token is refused.
    for port in (settings.worker_log_port, settings.trigger_log_port):
        assert httpx.get(f"http://127.0.0.1:{port}/log/any.log", timeout=10).status_code == 403


def test_start_is_idempotent(settings: StackSettings, running: StackStatus) -> None:
    started = time.monotonic()
    again = start_stack(settings, timeout=30)
    assert time.monotonic() - started < 10
    assert [c.pid for c in again.components] == [c.pid for c in running.components]


def test_dag_runs_through_the_scheduler(client: AirflowClient, running: StackStatus) -> None:
    dag = client.wait_until_dag_parsed("stack_smoke", timeout=120)
    assert dag["is_paused"] is True
    client.unpause("stack_smoke")
    run_id = client.trigger("stack_smoke", conf={"purpose": "smoke"})
    runs = client.wait_for_dag_runs("stack_smoke", count=1, timeout=120)
    assert [run["dag_run_id"] for run in runs] == [run_id]
    assert runs[0]["state"] == "success", client.task_instances("stack_smoke", run_id)
    assert runs[0]["conf"] == {"purpose": "smoke"}
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances("stack_smoke", run_id)}
    assert states == {"read_env": "success", "ping_mlflow": "success"}

    seen = client.xcom("stack_smoke", run_id, "ping_mlflow")
    assert seen["tracking_uri"] == running.mlflow_url
    assert json.loads(seen["mlflow_conn"]) == {
        "conn_type": "http",
        "host": running.mlflow_url,
        "login": "admin",
        "password": running.mlflow_password,
    }
    assert seen["marker"] == MARKER
    assert seen["mlflow_health"] == 200


def test_backfill_runs_each_interval(client: AirflowClient) -> None:
    client.wait_until_dag_parsed("stack_daily", timeout=120)
    backfill_id = client.create_backfill("stack_daily", "2024-01-01", "2024-01-02", max_active_runs=1)
    assert client.get_backfill(backfill_id)["dag_id"] == "stack_daily"
    client.unpause("stack_daily")  # backfill runs stay queued while the DAG is paused
    runs = client.wait_for_dag_runs("stack_daily", count=2, timeout=120, run_type="backfill")
    assert [run["logical_date"][:10] for run in runs] == ["2024-01-01", "2024-01-02"]
    assert {run["state"] for run in runs} == {"success"}


def test_stop_leaves_nothing_behind(settings: StackSettings, running: StackStatus) -> None:
    pids = [json.loads(path.read_text())["pid"] for path in settings.run_dir.glob("*.pid")]
    assert len(pids) == len(COMPONENTS)
    processes = [psutil.Process(pid) for pid in pids]
    for process in list(processes):
        processes.extend(process.children(recursive=True))

    started = time.monotonic()
    stopped = stop_stack(settings)
    print(f"stack stopped in {time.monotonic() - started:.1f} s")

    assert sorted(stopped) == sorted(COMPONENTS)
    assert not list(settings.run_dir.glob("*.pid"))
    for process in processes:  # is_running() also compares the start time, so a reused pid does not count
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE, process
    for port in (settings.airflow_port, settings.mlflow_port, settings.worker_log_port, settings.trigger_log_port):
        assert not port_in_use(port), port
    assert stop_stack(settings) == []
