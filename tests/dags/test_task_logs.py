"""What a task's log shows: MLflow's own log lines at their level, no flood of third-party warnings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A fresh process, as a task is: MLflow configured its stderr handler on import; the task's logging is a
# root handler (stdout here). After the hook routed MLflow's logs, its INFO line reaches that handler as INFO.
_PROBE = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
import mlflow
logging.getLogger("mlflow.tracking._model_registry.client").info("Created version '3' of model 'm'.")
from retrainer_provider.hooks.mlflow import route_mlflow_logs
route_mlflow_logs()
route_mlflow_logs()  # once per task: twice is harmless
logging.getLogger("mlflow.tracking._model_registry.client").info("Created version '4' of model 'm'.")
"""


def test_mlflow_log_lines_reach_the_task_log_at_their_own_level_not_on_stderr(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={
            "PYTHONPATH": f"{REPO / 'plugins'}:{REPO / 'include'}",
            "PATH": "/usr/bin:/bin",
            "AIRFLOW_HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Created version '3'" in result.stderr  # MLflow's own handler, before: what Airflow shows as ERROR
    # Through the task's logging (Airflow's, once the hook is imported), at INFO.
    [line] = [line for line in result.stdout.splitlines() if "Created version '4'" in line]
    assert "info" in line.lower() and "error" not in line.lower(), line
    assert "Created version '4'" not in result.stderr


_IMPORT_SKOPS = """
import warnings
import airflow.models  # what a task has loaded: Airflow's deprecated modules among them
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from retrainer.trusted_models import skops
    skops().get_untrusted_types
print(len(caught))
"""


def test_skops_is_imported_in_a_task_without_a_warning_per_scipy_ufunc(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO / "include"), "PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_SKOPS], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "0", result.stdout[-2000:]
