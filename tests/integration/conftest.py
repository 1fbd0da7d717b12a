"""Shared helpers of the integration tier: free ports and a stack in a temporary folder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from retrainer.stack import REPO_ROOT, StackSettings, StackStatus, start_stack, stop_stack
from tests.helpers import free_ports


def temporary_stack(root: Path, dags_folder: Path, plugins_folder: Path) -> StackSettings:
    """Settings for a stack whose state lives under ``root``, on free ports."""
    airflow_port, mlflow_port, worker_log_port, trigger_log_port = free_ports(4)
    return StackSettings(
        repo_root=REPO_ROOT,
        state_dir=root / "state",
        airflow_port=airflow_port,
        mlflow_port=mlflow_port,
        dags_folder=dags_folder,
        plugins_folder=plugins_folder,
        worker_log_port=worker_log_port,
        trigger_log_port=trigger_log_port,
    )


@contextmanager
def project_stack(
    factory: pytest.TempPathFactory, projects: Path, gx_root: Path, **env: str
) -> Iterator[StackStatus]:
    """A running stack (the repo's dags/ and plugins/) on the project files in ``projects``; stopped on exit.

    Args:
        factory: Where the stack's state folder is made.
        projects: The folder of project files (``RETRAINER_PROJECTS_DIR``).
        gx_root: The Great Expectations context (``RETRAINER_GX_ROOT``).
        **env: Further environment of the stack's processes.
    """
    settings = temporary_stack(factory.mktemp("stack"), REPO_ROOT / "dags", REPO_ROOT / "plugins")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "RETRAINER_PROJECTS_DIR": str(projects),
            "RETRAINER_GX_ROOT": str(gx_root),
            **env,
        }.items():
            patch.setenv(name, value)
        try:
            status = start_stack(settings, timeout=240)
            # MLflow runs its basic-auth app: the test's own clients log in as the tasks do.
            patch.setenv("MLFLOW_TRACKING_USERNAME", status.mlflow_username)
            patch.setenv("MLFLOW_TRACKING_PASSWORD", status.mlflow_password or "")
            yield status
        finally:
            stop_stack(settings)


def write_manual_project(root: Path, name: str, registered_model: str) -> Path:
    """A copy of the demo project writing under ``root/data``, whose runs are all started by hand.

    Its schedule has no tick inside its date range, so the scheduler never starts a run by itself.

    Returns:
        The project file, alone in ``root/projects`` (point ``RETRAINER_PROJECTS_DIR`` at its folder).
    """
    raw = yaml.safe_load((REPO_ROOT / "projects" / "flights.yaml").read_text())
    raw["name"] = name
    raw["registered_model"] = registered_model
    raw["data"]["root_uri"] = str(root / "data")
    raw["schedule"] = {"cron": "0 3 * * 1", "start_date": "2013-01-08", "end_date": "2013-01-08T01:00:00Z"}
    projects = root / "projects"
    projects.mkdir()
    path = projects / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# -- a real Docker engine and the trainer image --------------------------------------------------------------
ENGINE_DIR = REPO_ROOT / ".docker-engine"
TRAINER_IMAGE = "retrainer/trainer"


def _engine_answers(host: str) -> bool:
    from docker import APIClient
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        with APIClient(base_url=host, timeout=10) as client:
            return bool(client.ping())
    except (DockerException, RequestException, OSError):
        return False


def _no_engine(reason: str) -> None:
    """Skip where no engine can run; in CI (``CI=true``) the container tests must run, so fail instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the container tests, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """A Docker engine: ``DOCKER_HOST`` if one answers there, else a private one started for the session.

    The private engine (``scripts/docker-engine.sh``: Debian's docker.io, installed if missing, which needs
    root) keeps its images in ``.docker-engine/``, so later sessions reuse the built trainer image.
    """
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if _engine_answers(host):
        yield host
        return
    started = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "docker-engine.sh"), "start", str(ENGINE_DIR)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if started.returncode != 0:
        _no_engine(
            f"no Docker engine answers at {host} and none could be started: {started.stderr.strip()[-500:]}"
        )
    host = f"unix://{ENGINE_DIR}/docker.sock"
    try:
        yield host
    finally:
        subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "docker-engine.sh"), "stop", str(ENGINE_DIR)], check=False
        )


def _has_image(host: str, name: str) -> bool:
    from docker import APIClient

    with APIClient(base_url=host, timeout=30) as client:
        return bool(client.images(name=name))


@pytest.fixture(scope="session")
def trainer_image(docker_host: str) -> str:
    """The trainer image of this checkout, built with ``make trainer-image`` (layers are cached by the engine).

    The base is ``python:3.11-slim`` where the engine has it or can pull it, else ``local/python-base``, built
    from Debian's archive (no registry needed).
    """
    env = {**os.environ, "DOCKER_HOST": docker_host}
    base = "python:3.11-slim"
    if not _has_image(docker_host, base):
        pulled = subprocess.run(["docker", "pull", base], env=env, capture_output=True, text=True, timeout=600)
        if pulled.returncode != 0:
            base = "local/python-base"
            subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "docker-engine.sh"), "base-image"],
                env=env,
                check=True,
                timeout=900,
            )
    built = subprocess.run(
        ["make", "--no-print-directory", "trainer-image", f"BASE_IMAGE={base}", f"TRAINER_IMAGE={TRAINER_IMAGE}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, f"make trainer-image failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
    return f"{TRAINER_IMAGE}:latest"
