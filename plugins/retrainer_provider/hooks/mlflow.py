"""A hook for the MLflow tracking server and model registry."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.hook import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from retrainer_provider.hooks import connection_url

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from retrainer.tracking import Tracking


class MlflowHook(BaseHook):
    """The MLflow tracking server named by an Airflow connection, as a :class:`retrainer.tracking.Tracking`.

    The connection (conn type ``http``) gives the server URL in ``host`` (with scheme), optionally ``port``,
    and basic-auth credentials in ``login``/``password`` (or a bearer token in the extra ``token``). Define it
    in the UI or as ``AIRFLOW_CONN_MLFLOW_DEFAULT='{"conn_type": "http", "host": "http://mlflow:5000"}'``.
    Without the connection, ``MLFLOW_TRACKING_URI`` of the worker's environment is used. The hook changes no
    process state: steps get the ``Tracking`` explicitly.

    Args:
        mlflow_conn_id: The Airflow connection id.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def tracking(self) -> Tracking:
        """The server and its credentials, from the connection or ``MLFLOW_TRACKING_URI``."""
        from retrainer.tracking import Tracking, TrackingError

        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            try:
                return Tracking.from_env(os.environ)
            except TrackingError:
                raise ValueError(
                    f"no Airflow connection {self.mlflow_conn_id!r} and no MLFLOW_TRACKING_URI: "
                    "cannot tell where the MLflow server is"
                ) from None
        host = connection_url(conn, self.mlflow_conn_id, "the MLflow server URL")
        token = (conn.extra_dejson or {}).get("token")
        return Tracking(host, conn.login or None, conn.password or None, token or None)

    def get_tracking(self) -> Tracking:
        """The server, for the platform's steps (MLflow's own log lines go to the task log at their level)."""
        route_mlflow_logs()
        return self.tracking

    def get_conn(self) -> MlflowClient:
        """A client of the server's tracking store and registry (use it inside ``get_tracking().active()``)."""
        return self.tracking.client()


def route_mlflow_logs() -> None:
    """Hand MLflow's log records to the task's logging (the root logger), at their own level.

    On import MLflow gives its ``mlflow`` logger a handler of its own on stderr and stops propagation; Airflow
    shows whatever a task writes to stderr as ERROR lines, so "Created version '3'" looked like a failure.
    """
    import logging

    import mlflow  # noqa: F401  it configures its logger when imported: undo that after, not before

    logger = logging.getLogger("mlflow")
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler):
            logger.removeHandler(handler)
    logger.propagate = True
