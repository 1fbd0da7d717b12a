"""Addresses of what the platform records, as people open them: Airflow runs, MLflow runs and model versions, and
the reports the model page serves (Evidently, Data Docs, quarantine reports).

One place builds them, so that the run notes, the tasks' extra links, the model page and the CLI agree. Base
addresses are those a browser reaches (``RETRAINER_MLFLOW_UI_URL`` where MLflow is published elsewhere than the
tasks reach it); with no base, paths are relative to the Airflow UI.
"""

from __future__ import annotations

from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

# Where the Airflow plugin (plugins/retrainer_ui.py) mounts its pages in the api-server.
PLUGIN_PREFIX = "/retrainer"


def _part(value: object) -> str:
    return quote(str(value), safe="")  # MLflow gives versions as numbers


class Links(BaseModel):
    """Base addresses of the two UIs.

    Attributes:
        airflow: The Airflow UI, e.g. ``http://localhost:8080`` (empty: paths relative to it).
        mlflow: The MLflow UI, e.g. ``http://localhost:5000`` (empty: no MLflow links).
    """

    model_config = ConfigDict(frozen=True)

    airflow: str = ""
    mlflow: str = ""

    def _airflow(self, path: str) -> str:
        return f"{self.airflow.rstrip('/')}{path}"

    def airflow_run(self, dag_id: str, run_id: str) -> str:
        """The run's page in the Airflow UI."""
        return self._airflow(f"/dags/{_part(dag_id)}/runs/{_part(run_id)}")

    def airflow_task(self, dag_id: str, run_id: str, task_id: str) -> str:
        """A task instance's page in the Airflow UI."""
        return f"{self.airflow_run(dag_id, run_id)}/tasks/{_part(task_id)}"

    def model_page(self, project: str) -> str:
        """The project's model page (the Airflow plugin)."""
        return self._airflow(f"{PLUGIN_PREFIX}/models/{_part(project)}")

    def report(self, project: str, path: str) -> str:
        """A report under the project's ``reports/`` or ``quarantine/`` folder, served by the model page.

        Args:
            project: The project's name.
            path: The report's path relative to the project's data root, e.g. ``reports/c1/drift/drift.html``.
        """
        return self._airflow(f"{PLUGIN_PREFIX}/models/{_part(project)}/files/{quote(path)}")

    def mlflow_run(self, run_id: str) -> str | None:
        """The run's page in the MLflow UI (None without an MLflow address)."""
        return f"{self.mlflow.rstrip('/')}/#/runs/{_part(run_id)}" if self.mlflow else None

    def model_version(self, model: str, version: str) -> str | None:
        """The model version's page in the MLflow UI (None without an MLflow address)."""
        if not self.mlflow:
            return None
        return f"{self.mlflow.rstrip('/')}/#/models/{_part(model)}/versions/{_part(version)}"


def relative_to_root(uri: str, root_uri: str) -> str | None:
    """``uri`` as a path under the data root ``root_uri`` (None when it lies elsewhere)."""
    root = root_uri.rstrip("/") + "/"
    if uri.startswith("file://") and not root.startswith("file://"):
        uri = uri.removeprefix("file://")
    return uri[len(root) :] if uri.startswith(root) else None
