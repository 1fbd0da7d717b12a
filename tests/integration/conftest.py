"""Shared helpers of the integration tier: free ports and a stack in a temporary folder."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from retrainer.stack import REPO_ROOT, StackSettings


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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
