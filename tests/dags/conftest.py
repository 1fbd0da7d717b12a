"""DAG tests parse the real dags/ folder with Airflow, in a throw-away AIRFLOW_HOME, with no secrets set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow_home")
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
    # The demo project's own defaults (a developer may have chosen another backend in the shell).
    for name in ("RETRAINER_TRAINING_BACKEND", "RETRAINER_TRAINER_IMAGE"):
        os.environ.pop(name, None)
    # Airflow puts the plugins folder on sys.path; so do the tests.
    sys.path.insert(0, str(REPO / "plugins"))
    return home
