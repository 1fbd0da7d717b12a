"""The retraining platform in the Airflow UI: a "Models" entry in the navigation and a "Model" tab on each
project's DAGs, both showing the model pages (``retrainer_provider.ui``) served by the API server under
``/retrainer``, behind Airflow's login.

Airflow imports every top-level module of the plugins folder; this one only declares the plugin (the pages'
work happens on request).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from retrainer.links import PLUGIN_PREFIX
from retrainer_provider.ui.app import app

ICON = f"{PLUGIN_PREFIX}/icon.svg"


class RetrainerPlugin(AirflowPlugin):
    """Model pages: which version serves, since when, why, and every cycle, move, alert and quarantine."""

    name = "retrainer"
    fastapi_apps = [{"app": app, "url_prefix": PLUGIN_PREFIX, "name": "retrainer model pages"}]
    external_views = [
        {
            "name": "Models",
            "href": f"{PLUGIN_PREFIX}/",
            "destination": "nav",
            "url_route": "retrainer-models",
            "icon": ICON,
        },
        {
            "name": "Model",
            "href": f"{PLUGIN_PREFIX}/dags/{{DAG_ID}}",
            "destination": "dag",
            "url_route": "retrainer-model",
            "icon": ICON,
        },
    ]
