"""The weekly DAG with the docker training backend, through the real scheduler and a real Docker engine.

The trainer image of this checkout is built (``make trainer-image``), a real stack runs, and two project files,
each with its registered model and data folder, train on the same demo weeks:

- ``it_docker`` trains in the image with 2 CPUs and 2 GiB: the candidate becomes the champion, and its model
  version records the backend, the image and the image's id, as the engine reports them;
- ``it_docker_oom`` trains in the same image with 96 MiB, far too little: the engine kills the container for
  memory, the task fails at once (a retry would die the same way) with exit code 137 and the trainer's last
  lines in its log, the unfinished MLflow run is closed, nothing is registered for it and the other project's
  champion stays.

Where no engine can run, these tests skip with the reason; in CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrainer import demo
from retrainer.airflow_api import AirflowClient
from retrainer.config import load_config
from retrainer.stack import REPO_ROOT, StackStatus

from .conftest import project_stack, write_manual_project

pytestmark = pytest.mark.integration

MODEL, STARVED_MODEL = "it_docker_model", "it_docker_oom_model"
FITS, STARVED = "it_docker", "it_docker_oom"
WEEKS = demo.week_starts(demo.DEMO_START, 2)
CUTOFF = demo.week_cutoff(WEEKS[-1]).isoformat()


@pytest.fixture(scope="module")
def projects(trainer_image: str) -> Iterator[Path]:
    # Not under pytest's 0700 temporary folder: the image's non-root user must be able to read the data.
    root = Path(tempfile.mkdtemp(prefix="retrainer-docker-it-"))
    root.chmod(0o755)
    path = write_manual_project(root, FITS, MODEL)
    raw = yaml.safe_load(path.read_text())
    raw["training"] = {"backend": "docker", "image": trainer_image, "cpus": 2, "memory": "2g"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    # A project of its own (projects never share a registered model or a data root), on the same weeks.
    starved = {**raw, "name": STARVED, "registered_model": STARVED_MODEL, "data": {"root_uri": str(root / "oom")}}
    starved["training"] = {**raw["training"], "memory": "96m"}
    starved_path = path.parent / f"{STARVED}.yaml"
    starved_path.write_text(yaml.safe_dump(starved, sort_keys=False))
    shutil.copytree(REPO_ROOT / "great_expectations", root / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    for project in (path, starved_path):
        demo.land_weeks(load_config(project), WEEKS[0], len(WEEKS))
    yield path.parent
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(projects: Path, docker_host: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackStatus]:
    # The worker reaches the engine through DOCKER_HOST.
    with project_stack(tmp_path_factory, projects, projects.parent / "gx", DOCKER_HOST=docker_host) as status:
        yield status


@pytest.fixture(scope="module")
def client(stack: StackStatus) -> Iterator[AirflowClient]:
    with AirflowClient(stack.airflow_api_url, stack.username, stack.password or "", poll_interval=1.0) as api:
        for name in (FITS, STARVED):
            api.wait_until_dag_parsed(f"retrain_{name}", timeout=180)
            api.unpause(f"retrain_{name}")
        yield api


@pytest.fixture(scope="module")
def registry(stack: StackStatus) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url)


@pytest.fixture(scope="module")
def engine(docker_host: str) -> Iterator[Any]:
    from docker import APIClient

    with APIClient(base_url=docker_host, timeout=60) as api:
        yield api


def _run(client: AirflowClient, project: str) -> tuple[str, dict[str, Any]]:
    dag_id = f"retrain_{project}"
    run_id = client.trigger(dag_id, conf={"cutoff": CUTOFF})
    started = time.monotonic()
    run = client.wait_for_dag_run(dag_id, run_id, timeout=900)
    print(f"{dag_id}: {run['state']} in {time.monotonic() - started:.0f} s")
    return run_id, run


def _task(client: AirflowClient, project: str, run_id: str, task_id: str) -> dict[str, Any]:
    [task] = [t for t in client.task_instances(f"retrain_{project}", run_id) if t["task_id"] == task_id]
    return task


def test_the_weekly_cycle_trains_in_the_container_and_records_the_image(
    client: AirflowClient, registry: Any, engine: Any, trainer_image: str
) -> None:
    run_id, run = _run(client, FITS)
    states = {t["task_id"]: t["state"] for t in client.task_instances(f"retrain_{FITS}", run_id)}
    assert run["state"] == "success", states
    champion = registry.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1"
    image_id = engine.inspect_image(trainer_image)["Id"]
    assert champion.tags["retrainer.training_backend"] == "docker"
    assert champion.tags["retrainer.trainer_image"] == trainer_image
    assert champion.tags["retrainer.trainer_image_id"] == image_id
    assert champion.tags["retrainer.trained_on"] == "cpu"
    candidate = registry.get_run(champion.run_id)
    assert candidate.data.tags["retrainer.training_backend"] == "docker"
    assert candidate.data.tags["retrainer.code_version"]  # baked into the image when it was built
    trained = client.xcom(f"retrain_{FITS}", run_id, "train")
    assert trained["run_id"] == champion.run_id  # only the run id (and a summary) came back
    log = client.task_log(f"retrain_{FITS}", run_id, "train")
    assert "Starting docker container from image" in log
    assert f"in {trainer_image}" in log
    # The container is gone (auto_remove).
    assert not engine.containers(all=True, filters={"label": "retrainer.step=train"})


def test_a_container_killed_for_memory_fails_the_task_and_leaves_the_registry_unchanged(
    client: AirflowClient, registry: Any, engine: Any
) -> None:
    champion = registry.get_model_version_by_alias(MODEL, "champion").version
    run_id, run = _run(client, STARVED)
    assert run["state"] == "failed"
    train = _task(client, STARVED, run_id, "train")
    assert train["state"] == "failed"
    assert train["try_number"] == 1, "killed for memory at its limit: not retried, a retry would die the same way"
    assert _task(client, STARVED, run_id, "promote")["state"] == "upstream_failed"
    log = client.task_log(f"retrain_{STARVED}", run_id, "train", try_number=1)
    assert "killed for memory (exit code 137, limit 96m)" in log, log[-4000:]
    assert "no model was registered" in log
    # Nothing registered; the other project's champion is untouched.
    assert registry.search_model_versions(f"name='{STARVED_MODEL}'") == []
    assert registry.get_model_version_by_alias(MODEL, "champion").version == champion
    # A run the trainer had started before it was killed is closed, saying why (none if it died earlier).
    experiment = registry.get_experiment_by_name(STARVED)
    if experiment is not None:
        runs = registry.search_runs([experiment.experiment_id], "tags.`retrainer.kind` = 'candidate'")
        assert {r.info.status for r in runs} <= {"KILLED"}
        assert all("killed for memory" in r.data.tags["retrainer.failure"] for r in runs)
    assert not engine.containers(all=True, filters={"label": "retrainer.step=train"})


def test_a_trainer_container_left_running_by_an_earlier_try_is_killed_before_the_next_starts(
    projects: Path, engine: Any, trainer_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow runs one try of a task at a time: a trainer of this cycle still running is an orphan of a launcher
    killed outright, and would train beside the next try's. No stack is needed: only the engine."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "plugins"))  # as Airflow does for its plugins folder
    from retrainer import training
    from retrainer.tracking import Tracking
    from retrainer_provider.operators.trainer_docker import TrainerDockerOperator, trainer_labels

    config = load_config(projects / f"{FITS}.yaml")
    environment, _ = training.trainer_environment(config, Tracking("http://127.0.0.1:1"), {})
    command = training.trainer_command(CUTOFF, "orphaned_cycle", trigger="scheduled", lease="ab12")
    launch = training.TrainerLaunch(command, environment, {}, [], "orphaned_cycle", "ab12")
    other_cycle = training.TrainerLaunch(command, environment, {}, [], "another_cycle", "cd34")

    def started(labels: dict[str, str]) -> str:
        container = engine.create_container(trainer_image, entrypoint=["sleep", "600"], labels=labels)
        engine.start(container["Id"])
        return container["Id"]

    orphan = started(trainer_labels(launch.for_try(1)))
    unrelated = started(trainer_labels(other_cycle.for_try(1)))
    try:
        operator = TrainerDockerOperator(
            task_id="train", launch=launch.to_xcom(), training=config.training, data_root=None
        )
        operator._stop_earlier_tries(engine, launch.for_try(2))
        assert engine.inspect_container(orphan)["State"]["Running"] is False
        assert engine.inspect_container(unrelated)["State"]["Running"] is True
    finally:
        for container in (orphan, unrelated):
            engine.remove_container(container, force=True)
