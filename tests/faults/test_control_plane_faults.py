"""Faults of the control plane, on the production stack (PostgreSQL, Redis, SeaweedFS, MLflow, the
CeleryExecutor with two worker machines): the scheduler SIGKILLed in the middle of a run and started again
once Airflow reports it dead, and the metadata database (PostgreSQL, which holds Airflow's and MLflow's
databases) crashed while a run trains and started again on the same data, and the train task's own process
SIGKILLed while its trainer runs (as Airflow does to a try it stops).

As in production, a supervisor starts again whatever exits by itself (compose's ``restart: unless-stopped``);
a process a test killed stays down until the test starts it. Each test then checks what every fault must
leave: the run completes, the week it trained on is accepted and every earlier batch keeps its hash, the
champion is a model of the platform's own that loads and predicts, and no candidate run is left RUNNING.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrainer import demo, modeling, steps, storage
from retrainer.airflow_api import AirflowApiError, AirflowClient
from retrainer.catalog import BatchStatus, Catalog
from retrainer.config import ProjectConfig, load_config
from retrainer.tracking import Tracking
from tests.helpers import wait_until
from tests.integration.production.conftest import write_s3_project
from tests.integration.production.stack import ProductionStack

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PROJECT = "fault_control_plane"
RETRAIN = f"retrain_{PROJECT}"
WEEKS = demo.week_starts(demo.DEMO_START, 3)


@pytest.fixture(scope="module")
def production_projects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo project on S3, runs started by hand; the serving check (tested elsewhere) off."""
    folder = tmp_path_factory.mktemp("projects")
    path = write_s3_project(folder, PROJECT)
    raw = yaml.safe_load(path.read_text())
    raw["promotion"]["serving"] = {**raw["promotion"].get("serving", {}), "enabled": False}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def stack(production: ProductionStack) -> ProductionStack:
    production.supervise()
    return production


@pytest.fixture(scope="module")
def config(production_projects: Path, platform_s3: dict[str, str]) -> ProjectConfig:
    return load_config(production_projects / f"{PROJECT}.yaml")


@pytest.fixture(scope="module")
def registry(stack: ProductionStack) -> Iterator[Tracking]:
    """The stack's MLflow server, as this process's MLflow API talks to it."""
    tracking = Tracking(stack.mlflow_url)
    with tracking.active():
        yield tracking


@pytest.fixture(scope="module")
def client(stack: ProductionStack, production_client: AirflowClient) -> AirflowClient:
    production_client.wait_until_dag_parsed(RETRAIN, timeout=180)
    production_client.unpause(RETRAIN)
    return production_client


# -- what every fault must leave ---------------------------------------------------------------------------------
def _hashes(config: ProjectConfig) -> dict[str, str]:
    """Every accepted batch's recorded hash, checked against its file's content on S3."""
    records = [r for r in Catalog(config).all() if r.status is BatchStatus.ACCEPTED]
    for record in records:
        assert hashlib.sha256(storage.read_bytes(record.uri)).hexdigest() == record.sha256, record.batch_id
    return {r.batch_id: r.sha256 for r in records}


def _champion_loads(config: ProjectConfig, registry: Tracking) -> str:
    """The champion's version, after checking it loads as the platform's own model and predicts."""
    client = registry.client()
    champion = steps.champion_version(client, config)
    assert champion is not None, "no champion after the run"
    model = steps.load_model(client, config, f"models:/{config.model_name}/{champion.version}")
    catalog = Catalog(config)
    features, _ = modeling.prepare(catalog.load(catalog.all()[:1]), config)
    assert len(modeling.predict_for_metric(model, features, config.task)) == len(features)
    return str(champion.version)


def _candidate_runs(config: ProjectConfig, registry: Tracking, run_id: str) -> dict[str, str]:
    """Status of each candidate run the Airflow run ``run_id`` started, by MLflow run id."""
    client = registry.client()
    experiment = client.get_experiment_by_name(config.name)
    query = f"tags.`retrainer.kind` = 'candidate' and tags.`retrainer.cycle_id` = '{steps.safe_id(run_id)}'"
    return {run.info.run_id: run.info.status for run in client.search_runs([experiment.experiment_id], query)}


def _tasks(client: AirflowClient, run_id: str) -> dict[str, dict[str, Any]]:
    return {ti["task_id"]: ti for ti in client.task_instances(RETRAIN, run_id)}


def _start_and_reach(client: AirflowClient, week: date, task_id: str) -> str:
    """Trigger the cycle of ``week`` and wait until ``task_id`` runs; returns the run id."""
    run_id = client.trigger(RETRAIN, conf={"cutoff": demo.week_cutoff(week).isoformat()})

    def reached() -> bool:
        task = _tasks(client, run_id).get(task_id, {})
        assert task.get("state") not in {"success", "failed", "skipped"}, f"{task_id} ended before the fault"
        return task.get("state") == "running"

    wait_until(reached, timeout=600, what=f"{task_id} of {run_id} to run", interval=0.5)
    return run_id


def _finished(client: AirflowClient, run_id: str) -> dict[str, Any]:
    run = client.wait_for_dag_run(RETRAIN, run_id, timeout=900)
    tasks = {t: (ti["state"], ti["try_number"], ti.get("hostname")) for t, ti in _tasks(client, run_id).items()}
    assert run["state"] == "success", tasks
    return run


def _check_what_is_left(
    config: ProjectConfig,
    registry: Tracking,
    client: AirflowClient,
    run_id: str,
    week: date,
    before: dict[str, str],
) -> None:
    catalog = Catalog(config)
    assert catalog.get(week.isoformat()).status is BatchStatus.ACCEPTED
    after = _hashes(config)
    assert {batch: after.get(batch) for batch in before} == before, "an accepted batch changed"
    decision = client.xcom(RETRAIN, run_id, "promote")
    version = registry.client().get_model_version(config.model_name, decision["version"])
    assert version.tags["retrainer.decision"] == decision["verdict"]
    champion = _champion_loads(config, registry)
    if decision["verdict"] == "promoted":
        assert champion == decision["version"]
    runs = _candidate_runs(config, registry, run_id)
    assert client.xcom(RETRAIN, run_id, "train")["run_id"] in runs
    assert "RUNNING" not in runs.values() and list(runs.values()).count("FINISHED") == 1, runs


# -- the faults ------------------------------------------------------------------------------------------------
def test_the_scheduler_killed_mid_run_and_started_again_finishes_the_run_without_redoing_a_task(
    stack: ProductionStack, client: AirflowClient, config: ProjectConfig, registry: Tracking
) -> None:
    week = WEEKS[0]
    demo.land_weeks(config, week, 1)  # each test its own week: they run in any order
    before = _hashes(config)
    run_id = _start_and_reach(client, week, "train")

    stack.kill("scheduler")
    # Down until Airflow itself calls it dead (its heartbeat older than the health threshold): the new one must
    # take over the old one's running and queued tasks, not merely carry on from where it left.
    wait_until(
        lambda: client.health()["scheduler"]["status"] == "unhealthy",
        timeout=180,
        what="Airflow to report the scheduler dead",
        interval=1,
    )
    stack.start_again("scheduler")

    _finished(client, run_id)
    tries = {task: ti["try_number"] for task, ti in _tasks(client, run_id).items() if ti["state"] != "skipped"}
    assert set(tries.values()) == {1}, f"a task ran again after the scheduler restarted: {tries}"
    _check_what_is_left(config, registry, client, run_id, week, before)
    assert stack.restarts == (), f"other processes crashed with the scheduler: {stack.restarts}"


def test_the_metadata_database_crashed_mid_run_and_started_again_the_run_completes(
    stack: ProductionStack, client: AirflowClient, config: ProjectConfig, registry: Tracking
) -> None:
    import psycopg2

    week = WEEKS[1]
    demo.land_weeks(config, week, 1)  # each test its own week: they run in any order
    before = _hashes(config)
    run_id = _start_and_reach(client, week, "train")

    stack.kill("postgres")  # the postmaster and every backend: a crash, recovered from its WAL on start

    def database_down() -> bool:
        try:
            return client.health()["metadatabase"]["status"] != "healthy"
        except AirflowApiError:
            return True

    wait_until(database_down, timeout=120, what="Airflow to notice its database is gone", interval=1)
    stack.start_again("postgres")

    def accepts() -> bool:
        try:
            psycopg2.connect(stack.postgres_admin_dsn, connect_timeout=2).close()
        except psycopg2.OperationalError:
            return False
        return True

    wait_until(accepts, timeout=120, what="PostgreSQL to accept connections again", interval=0.5)

    _finished(client, run_id)
    _check_what_is_left(config, registry, client, run_id, week, before)
    wait_until(
        lambda: all(c["status"] == "healthy" for c in client.health().values() if isinstance(c, dict)),
        timeout=180,
        what=lambda: f"every component healthy again: {client.health()}",
        interval=1,
    )
    print(f"\nstarted again by the supervisor after the database crash: {stack.restarts or 'nothing'}")


def test_the_train_task_killed_outright_takes_its_trainer_with_it_and_the_retry_trains(
    stack: ProductionStack, client: AirflowClient, config: ProjectConfig, registry: Tracking
) -> None:
    """What Airflow does to a try it stops (a refused heartbeat, a crash of its database): the task's process is
    killed, with no time to stop its trainer or release its training lease. The trainer must die with it, and the
    next try must train at once under a lease of its own instead of waiting out the dead try's."""
    import psutil

    week = WEEKS[2]
    demo.land_weeks(config, week, 1)
    before = _hashes(config)
    run_id = _start_and_reach(client, week, "train")
    cycle = steps.safe_id(run_id)

    def trainer() -> psutil.Process | None:
        for process in psutil.process_iter(["cmdline"]):
            # A forked trainer's command line is its title (setproctitle), one padded string: split it.
            command = " ".join(process.info["cmdline"] or []).split()
            if "retrainer" in command and "train" in command and cycle in command:
                return process
        return None

    found = wait_until(trainer, timeout=300, what=f"the trainer of {cycle} to start", interval=0.5)
    launcher = found.parent()
    assert launcher is not None
    print(f"\nkilling the train task (pid {launcher.pid}) of the trainer (pid {found.pid})")
    launcher.kill()

    def trainer_gone() -> bool:
        try:
            return found.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(trainer_gone, timeout=60, what="the trainer to die with its task", interval=0.5)
    _finished(client, run_id)
    train = _tasks(client, run_id)["train"]
    assert train["try_number"] == 2, train  # the retry trained: it did not wait on the dead try's lease
    _check_what_is_left(config, registry, client, run_id, week, before)
