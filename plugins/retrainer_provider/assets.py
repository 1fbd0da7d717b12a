"""Every Asset of the platform, declared once.

``batches_landed(project)``: new batch files appeared in the project's landing zone (a watcher on the zone);
the drift monitor DAG is scheduled on it.

``drift_alert(project)``: a retrain of ``project`` is asked for now. Its events come from the Airflow REST API
(``POST /api/v2/assets/events``) or from the project's alert inbox, watched by ``AlertInboxTrigger``; the
project's retrain DAG is scheduled on it as well as on its weekly cron.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Asset, AssetWatcher

from retrainer_provider.triggers.alert_inbox import AlertInboxTrigger
from retrainer_provider.triggers.landing import LandingTrigger

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig

ALERT_POKE_SECONDS = 1.0


def drift_alert(project: ProjectConfig) -> Asset:
    """The drift-alert asset of a project; watched through its inbox when the batch store is a local folder."""
    from retrainer.alerts import asset_uri, inbox_folder

    watchers = []
    if "://" not in project.data.root_uri:  # the inbox watcher reads a local (or mounted) folder
        inbox = str(inbox_folder(project.data.root_uri))
        trigger = AlertInboxTrigger(directory=inbox, poke_interval=ALERT_POKE_SECONDS)
        watchers.append(AssetWatcher(name=f"{project.name}_alert_inbox", trigger=trigger))
    return Asset(
        name=f"drift_alert_{project.name}",
        uri=asset_uri(project.name),
        group="retrainer",
        watchers=watchers,
    )


def batches_landed(project: ProjectConfig) -> Asset:
    """New batches in a project's landing zone; watched when the batch store is a local folder."""
    watchers = []
    if "://" not in project.data.root_uri:
        trigger = LandingTrigger(root=project.data.root_uri, pattern=project.data.file_pattern, poke_interval=2.0)
        watchers.append(AssetWatcher(name=f"{project.name}_landing", trigger=trigger))
    return Asset(
        name=f"batches_landed_{project.name}",
        uri=f"retrainer://{project.name}/batches",
        group="retrainer",
        watchers=watchers,
    )
