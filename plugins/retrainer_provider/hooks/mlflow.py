"""A hook for the MLflow tracking server and model registry."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

from airflow.sdk.bases.hook import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException


class MlflowHook(BaseHook):
    """Points MLflow at the tracking server named by an Airflow connection.

    The connection (conn type ``http``) gives the server URL in ``host`` (with scheme), optionally ``port``,
    and basic-auth credentials in ``login``/``password``. Define it in the UI or as the environment variable
    ``AIRFLOW_CONN_MLFLOW_DEFAULT='{"conn_type": "http", "host": "http://mlflow:5000"}'``. Without the
    connection, ``MLFLOW_TRACKING_URI`` from the environment is used.

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
    def tracking_uri(self) -> str:
        """The tracking server URI, from the connection or ``MLFLOW_TRACKING_URI``."""
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:
                raise ValueError(
                    f"no Airflow connection {self.mlflow_conn_id!r} and no MLFLOW_TRACKING_URI: "
                    "cannot tell where the MLflow server is"
                ) from None
            return uri
        host = (conn.host or "").rstrip("/")
        if not host:
            raise ValueError(f"Airflow connection {self.mlflow_conn_id!r} has no host (the MLflow server URL)")
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
        if conn.login:
            os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
        return host

    def configure(self) -> str:
        """Make this process's MLflow client use the server (the task runs in its own process)."""
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return self.tracking_uri
