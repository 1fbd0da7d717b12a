"""Extra links of the cycle's tasks: ``promote`` to its model version in MLflow, ``drift`` to the Evidently report,
``validate`` to the Data Docs page of that validation.

Airflow 3 computes an operator's links in the worker when the task ends and keeps them as XComs; these read the
task's own result (or, for a validation that quarantined a batch and so failed, the page it pushed), so a link
exists exactly when there is something to open. :func:`attach` gives a task its link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from airflow.sdk.bases.operatorlink import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

    from retrainer.config import ProjectConfig

DATA_DOCS_XCOM = "data_docs"  # pushed by validate when it quarantines (it fails: no return value)


def _xcom(ti_key: TaskInstanceKey, key: str) -> Any:
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_value(ti_key=ti_key, key=key)


@attrs.define()
class _ResultLink(BaseOperatorLink):
    """A link to something the task's result names, under the project's data root or in MLflow."""

    project: str
    model: str
    root_uri: str
    label: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return self.label

    def _report(self, uri: str | None) -> str:
        from retrainer.links import relative_to_root
        from retrainer_provider.hooks.airflow_api import ui_links

        path = relative_to_root(uri, self.root_uri) if uri else None
        return ui_links().report(self.project, path) if path else ""


@attrs.define()
class ModelVersionLink(_ResultLink):
    """``promote`` → the version it registered, in MLflow's UI."""

    label: ClassVar[str] = "MLflow model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from retrainer_provider.hooks.airflow_api import ui_links

        result = _xcom(ti_key, "return_value") or {}
        version = result.get("version") if isinstance(result, dict) else None
        return (ui_links().model_version(self.model, str(version)) or "") if version else ""


@attrs.define()
class DriftReportLink(_ResultLink):
    """``drift`` → the Evidently report of the cycle's batches."""

    label: ClassVar[str] = "Evidently drift report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        result = _xcom(ti_key, "return_value") or {}
        uris = result.get("report_uris", []) if isinstance(result, dict) else []
        return self._report(next((u for u in uris if str(u).endswith(".html")), None))


@attrs.define()
class DataDocsLink(_ResultLink):
    """``validate`` → the Data Docs page of this validation (also when it quarantined the batch)."""

    label: ClassVar[str] = "Data Docs"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        result = _xcom(ti_key, "return_value")
        docs = result.get("data_docs") if isinstance(result, dict) else _xcom(ti_key, DATA_DOCS_XCOM)
        return self._report(docs)


def attach(task: Any, link: type[_ResultLink], project: ProjectConfig) -> None:
    """Give a task (an operator, or a ``@task``'s output) the link, for the project."""
    operator = getattr(task, "operator", task)
    made = link(project=project.name, model=project.model_name, root_uri=project.data.root_uri)
    operator.operator_extra_links = (*operator.operator_extra_links, made)
