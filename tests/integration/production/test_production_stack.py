"""The weekly cycle and a drift-triggered retrain on the production stack, for real.

PostgreSQL (Airflow's and MLflow's databases), an S3 server (SeaweedFS) holding the project's data and MLflow's
artifacts, Redis and the CeleryExecutor with two workers, each a "machine" of its own: its own network
namespace and hostname, its own read-only copy of the code in a folder of its own, a private /tmp, the
checkout read-only, and MLflow known only through the ``mlflow_default`` connection (no ``MLFLOW_*``
variable). A task that kept something on a local disk for a later task, wrote into the checkout or the Great
Expectations context, or fell back to a default MLflow store fails here; the runs must succeed with their
tasks spread over both workers.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import date
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from retrainer import demo, storage
from retrainer.airflow_api import AirflowClient
from retrainer.catalog import BatchStatus, Catalog
from retrainer.config import load_config
from retrainer.stack import REPO_ROOT
from tests.helpers import wait_until

from .stack import DATA_BUCKET, ProductionStack

pytestmark = pytest.mark.integration

PROJECT = "prod_flights"
MODEL = "prod_flights_arr_delay"
RETRAIN = f"retrain_{PROJECT}"
MONITOR = f"monitor_{PROJECT}"
FIRST_WEEK = demo.DEMO_START  # 2013-01-07: the one scheduled tick trains on it
DRIFTED_WEEK = date(2013, 6, 24)  # summer: far from the January the champion learned
CORRUPTED_WEEK = demo.week_starts(demo.DEMO_START, 2)[1]
NOTIFY = "ml-team@example.com"


# -- the stack: one project on S3, a real SMTP server for failure notifications -------------------------------
class _Inbox:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        with socket.socket() as probe:  # aiosmtpd checks its server by connecting to the port: name one
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def start(self) -> None:
        self.controller.start()


@pytest.fixture(scope="module")
def inbox() -> Iterator[_Inbox]:
    server = _Inbox()
    server.start()
    yield server
    server.controller.stop()


@pytest.fixture(scope="module")
def production_env(inbox: _Inbox) -> dict[str, str]:
    """The SMTP connection the failure notifier sends through (the dag-processor runs DAG callbacks)."""
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": inbox.port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "retrainer@example.com"},
    }
    return {"AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp)}


@pytest.fixture(scope="module")
def production_projects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo project on S3 with one weekly tick in its range (2013-01-14) and failure e-mails."""
    folder = tmp_path_factory.mktemp("projects")
    raw = yaml.safe_load((REPO_ROOT / "projects" / "flights.yaml").read_text())
    raw["name"], raw["registered_model"] = PROJECT, MODEL
    raw["data"]["root_uri"] = f"s3://{DATA_BUCKET}/{PROJECT}"
    raw["schedule"] = {
        "cron": "0 3 * * 1",
        "start_date": "2013-01-08",
        "end_date": "2013-01-14T03:00:00Z",
        "catchup": True,
    }
    raw["alerts"] = {"cooldown_minutes": 0}
    raw["notifications"] = {"on_failure": [NOTIFY]}
    (folder / f"{PROJECT}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def config(production_projects: Path, platform_s3: dict[str, str]) -> Any:
    return load_config(production_projects / f"{PROJECT}.yaml")


@pytest.fixture(scope="module")
def registry(production: ProductionStack) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=production.mlflow_url, registry_uri=production.mlflow_url)


@pytest.fixture(scope="module")
def client(production_client: AirflowClient) -> AirflowClient:
    production_client.wait_until_dag_parsed(RETRAIN, timeout=180)
    production_client.wait_until_dag_parsed(MONITOR, timeout=180)
    return production_client


def _hostnames(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, str]:
    return {
        ti["task_id"]: ti.get("hostname") or "" for ti in client.task_instances(dag_id, run_id) if ti["hostname"]
    }


def _states(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}


def _next_run(client: AirflowClient, dag_id: str, seen: int, run_type: str | None = None) -> dict[str, Any]:
    """Wait for run number ``seen + 1`` of ``dag_id`` to start, then to finish."""
    runs = wait_until(
        lambda: (runs := client.list_dag_runs(dag_id, run_type=run_type))[seen:] and runs,
        timeout=300,
        what=f"run {seen + 1} of {dag_id}",
        interval=1,
    )
    return client.wait_for_dag_run(dag_id, runs[-1]["dag_run_id"], timeout=900)


def _explain(client: AirflowClient, dag_id: str, run: dict[str, Any]) -> str:
    """Each task's state and where it ran, and the errors of the failed ones, for an assertion message."""
    lines = []
    for ti in client.task_instances(dag_id, run["dag_run_id"]):
        lines.append(f"{ti['task_id']}: {ti['state']} on {ti.get('hostname') or '-'}")
        if ti["state"] == "failed":
            log = client.task_log(dag_id, run["dag_run_id"], ti["task_id"], ti["try_number"])
            lines += [f"    {line}" for line in log.splitlines() if re.search(r"Error|Exception", line)][-5:]
    return "\n".join(lines)


# -- the stack -----------------------------------------------------------------------------------------------
def test_the_stack_is_up_and_each_machine_sees_only_its_own(
    production: ProductionStack, production_client: AirflowClient
) -> None:
    health = production_client.health()
    for component in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[component]["status"] == "healthy", health
    assert httpx.get(f"{production.mlflow_url}/health", timeout=10).status_code == 200

    from celery import Celery

    with Celery("smoke", broker=production.redis_url, set_as_current=False) as app:
        replies = app.control.ping(destination=[w.celery_hostname for w in production.workers], timeout=5)
    assert {name for reply in replies for name in reply} == {w.celery_hostname for w in production.workers}
    assert len(set(production.worker_ips)) == 2 and production.host_ip not in production.worker_ips
    for worker in production.workers:  # MLflow reaches a worker only as the mlflow_default connection
        assert not [name for name in worker.env if name.startswith("MLFLOW_")]
        assert "AIRFLOW_CONN_MLFLOW_DEFAULT" in worker.env

    from botocore.exceptions import ClientError

    for identity, own, other in (
        (production.s3_platform, production.data_bucket, production.mlflow_bucket),
        (production.s3_mlflow, production.mlflow_bucket, production.data_bucket),
    ):
        s3 = production.s3_client(identity)
        s3.list_objects_v2(Bucket=own)
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.list_objects_v2(Bucket=other)

    # The control plane listens on the bridge (or loopback), never on all interfaces; the triggerer's log
    # server is the one exception Airflow has no setting for.
    trigger_log_port = int(production.control_env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"])
    worker_pids = {production.pids[worker.name] for worker in production.workers}
    pids: set[int] = set()
    for pid in set(production.pids.values()) - worker_pids:
        try:
            pids.update([pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))])
        except psutil.Error:
            continue
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }
    beyond = {(ip, port) for ip, port in listening if ip not in {production.host_ip, "127.0.0.1", "::1"}}
    assert {port for _, port in beyond} <= {trigger_log_port}, f"listening beyond the bridge: {sorted(beyond)}"


def test_racing_writers_on_the_real_s3_server_lose_nothing(
    production: ProductionStack, platform_s3: dict[str, str], synth: Any, tmp_path: Path
) -> None:
    """Conditional writes as SeaweedFS honours them: one create wins, no catalog update is lost."""
    from concurrent.futures import ThreadPoolExecutor

    uri = f"s3://{DATA_BUCKET}/races/lease.json"
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: storage.create_bytes(uri, f"writer {i}".encode()), range(16)))
    assert won.count(True) == 1 and storage.read_bytes(uri) == f"writer {won.index(True)}".encode()
    project = synth.make_project(tmp_path, "races", root_uri=f"s3://{DATA_BUCKET}/races/catalog")
    synth.race_to_register_and_accept(project.config, project.land(range(6), rows=20))


# -- the weekly cycle ----------------------------------------------------------------------------------------
def test_the_weekly_cycle_runs_on_both_workers_with_data_and_artifacts_on_s3(
    production: ProductionStack, client: AirflowClient, registry: Any, config: Any
) -> None:
    landed = demo.land_weeks(config, FIRST_WEEK, 1)
    assert landed[0].startswith(f"s3://{DATA_BUCKET}/{PROJECT}/landing/")
    client.unpause(RETRAIN)  # the scheduler starts the one weekly tick in the project's range
    run = _next_run(client, RETRAIN, 0, run_type="scheduled")
    assert run["state"] == "success", _explain(client, RETRAIN, run)
    run_id = run["dag_run_id"]

    hostnames = _hostnames(client, RETRAIN, run_id)
    assert set(hostnames.values()) == set(production.worker_ips), f"tasks of one run ran on {hostnames}"
    for task_id, hostname in hostnames.items():  # each log served by the worker that ran the task
        log = client.task_log(RETRAIN, run_id, task_id)
        assert log.strip() and "Could not read served logs" not in log, (task_id, hostname, log[:500])

    # The model: registered in MLflow (on PostgreSQL), its artifacts in MLflow's bucket, proxied by the server.
    champion = registry.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1" and champion.tags["retrainer.decision"] == "promoted"
    artifacts = production.s3_client(production.s3_admin).list_objects_v2(Bucket=production.mlflow_bucket)
    keys = [item["Key"] for item in artifacts.get("Contents", [])]
    assert any(key.endswith("MLmodel") for key in keys), keys[:20]
    assert any(key.endswith("decision/decision.json") for key in keys)

    # The data: catalog, reports, Great Expectations results and Data Docs, all in the project's prefix.
    catalog = Catalog(config)
    assert catalog.get(FIRST_WEEK.isoformat()).status is BatchStatus.ACCEPTED
    docs = catalog.get(FIRST_WEEK.isoformat()).validation["data_docs"]
    assert docs.startswith(f"s3://{DATA_BUCKET}/{PROJECT}/reports/gx/data_docs/validations/"), docs
    assert storage.exists(docs)
    assert storage.list_files(storage.join(config.data.root_uri, "reports", "cycles"), "*.json")
    record = json.loads(storage.read_bytes(storage.join(catalog.reports, "cycles", f"{_safe(run_id)}.json")))
    assert record["decision"]["verdict"] == "promoted" and record["project_sha256"]

    # Nothing was kept on a worker's disk: no MLflow store, no Great Expectations results in its copy.
    for worker in production.workers:
        assert not list(worker.home.rglob("mlflow.db")) and not list(worker.home.rglob("mlruns"))
        assert not (worker.code / "great_expectations" / "uncommitted").exists()


def _safe(run_id: str) -> str:
    from retrainer.steps import safe_id

    return safe_id(run_id)


# -- a drifted week: monitor -> alert -> retrain ---------------------------------------------------------------
def test_a_drifted_week_raises_an_alert_and_the_retrain_follows(
    production: ProductionStack, client: AirflowClient, registry: Any, config: Any
) -> None:
    client.unpause(MONITOR)  # its watcher announces every landed file the catalog does not know yet
    demo.land_weeks(config, DRIFTED_WEEK, 1)
    monitor = _next_run(client, MONITOR, 0)
    assert monitor["state"] == "success", _explain(client, MONITOR, monitor)
    [alert] = client.xcom(MONITOR, monitor["dag_run_id"], "raise_alert")["alerts"]
    assert alert["kind"] == "data_drift" and alert["batch_ids"] == [DRIFTED_WEEK.isoformat()]

    retrain = _next_run(client, RETRAIN, 0, run_type="asset_triggered")
    assert retrain["state"] == "success", _explain(client, RETRAIN, retrain)
    assert set(_hostnames(client, RETRAIN, retrain["dag_run_id"]).values()) == set(production.worker_ips)
    ingested = client.xcom(RETRAIN, retrain["dag_run_id"], "ingest")
    assert [a["source"] for a in ingested["alerts"]] == ["drift-monitor"]
    assert DRIFTED_WEEK.isoformat() in client.xcom(RETRAIN, retrain["dag_run_id"], "train")["window"]
    decision = client.xcom(RETRAIN, retrain["dag_run_id"], "promote")
    assert decision["verdict"] in {"promoted", "rejected"}
    assert registry.get_model_version(MODEL, decision["version"]).tags["retrainer.decision"] == decision["verdict"]


def test_the_platforms_metrics_reach_statsd_beside_airflows(production: ProductionStack) -> None:
    assert production.statsd_log is not None
    wanted = (
        f"airflow.retrainer.decision.{PROJECT}.promoted:1|c",
        f"airflow.retrainer.champion_metric.{PROJECT}:",
        f"airflow.retrainer.drift_share.{PROJECT}:",
        f"airflow.retrainer.alerts_raised.{PROJECT}:1|c",
        f"airflow.retrainer.cycle_duration.{PROJECT}:",
        "airflow.scheduler_heartbeat:",
    )

    def missing() -> list[str]:
        lines = production.statsd_log.read_text(errors="replace").splitlines()
        return [name for name in wanted if not any(line.startswith(name) for line in lines)]

    wait_until(lambda: not missing(), timeout=60, what=lambda: f"the metrics {missing()}", interval=1)


def test_a_quarantined_batch_fails_the_monitor_run_and_sends_one_email(
    client: AirflowClient, config: Any, inbox: _Inbox
) -> None:
    seen = len(client.list_dag_runs(MONITOR))
    catalog = Catalog(config)
    frame = demo.week_frame(demo.flights_with_weather(), CORRUPTED_WEEK, list(config.schema_.columns))
    catalog.land(CORRUPTED_WEEK.isoformat(), demo.corrupt(frame))
    run = _next_run(client, MONITOR, seen)
    assert run["state"] == "failed"
    assert _states(client, MONITOR, run["dag_run_id"])["validate"] == "failed"
    assert catalog.get(CORRUPTED_WEEK.isoformat()).status is BatchStatus.QUARANTINED
    # The dag-processor runs the DAG's failure callback.
    wait_until(lambda: inbox.messages, timeout=120, what="the failure e-mail", interval=1)
    [message] = inbox.messages
    assert message["To"] == NOTIFY and message["From"] == "retrainer@example.com"
    assert message["Subject"] == f"[retrainer] {MONITOR}: run {run['dag_run_id']} failed"
    body = (
        message.get_payload(0).get_payload(decode=True).decode()
        if message.is_multipart()
        else message.get_payload()
    )
    assert f"/dags/{MONITOR}/runs/" in body
