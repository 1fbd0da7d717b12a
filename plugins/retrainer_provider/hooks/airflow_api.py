"""A hook for Airflow's own REST API, for what the execution API cannot do (a run's note), and the addresses of
the two UIs as a browser reaches them."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk.bases.hook import BaseHook

from retrainer_provider.hooks import connection_url

if TYPE_CHECKING:
    from retrainer.airflow_api import AirflowClient
    from retrainer.links import Links

MLFLOW_UI_ENV = "RETRAINER_MLFLOW_UI_URL"


class AirflowApiHook(BaseHook):
    """Airflow's public REST API (``/api/v2``) as a :class:`retrainer.airflow_api.AirflowClient`.

    The connection (conn type ``http``) gives the API server's URL in ``host`` and a user of the auth manager in
    ``login``/``password``; the user needs the right to edit DAG runs (the simple auth manager's ``user`` role).
    Define it as ``AIRFLOW_CONN_AIRFLOW_API='{"conn_type": "http", "host": "http://airflow-apiserver:8080",
    "login": "retrainer", "password": "..."}'``; the embedded stack defines it.

    Args:
        airflow_api_conn_id: The Airflow connection id.
    """

    conn_name_attr = "airflow_api_conn_id"
    default_conn_name = "airflow_api"
    conn_type = "http"
    hook_name = "Airflow REST API"

    def __init__(self, airflow_api_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.airflow_api_conn_id = airflow_api_conn_id

    def get_conn(self) -> AirflowClient:
        """A client logged in as the connection's user (close it after use)."""
        from retrainer.airflow_api import AirflowClient

        conn = self.get_connection(self.airflow_api_conn_id)
        host = connection_url(conn, self.airflow_api_conn_id, "the API server URL")
        return AirflowClient(host, conn.login or "", conn.password or "", timeout=30.0, attempts=3)


def ui_links(mlflow_conn_id: str = "mlflow_default") -> Links:
    """The Airflow UI (the path of ``[api] base_url``: links relative to the host) and the MLflow UI
    (``RETRAINER_MLFLOW_UI_URL``, else the MLflow connection's address) as a browser reaches them."""
    from airflow.sdk import conf

    from retrainer.links import Links
    from retrainer_provider.hooks.mlflow import MlflowHook

    mlflow = os.environ.get(MLFLOW_UI_ENV, "")
    if not mlflow:
        try:
            uri = MlflowHook(mlflow_conn_id).tracking.uri
        except ValueError:  # no connection and no MLFLOW_TRACKING_URI: no MLflow links
            uri = ""
        mlflow = uri if uri.startswith("http") else ""
    # Only the path of Airflow's base URL: links then open on whatever host the user reached Airflow by.
    airflow = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return Links(airflow=airflow, mlflow=mlflow)
