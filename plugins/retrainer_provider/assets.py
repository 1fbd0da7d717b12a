"""Every Asset of the platform, declared once.

``batches_landed(project)``: new batch files appeared in the project's landing zone (a watcher on the zone);
``labels_arrived(project)``: late labels appeared in the project's ``labels/`` zone (a watcher on the zone).
The drift monitor DAG is scheduled on either.

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
    """The drift-alert asset of a project, watched through its inbox (a local folder or an S3 prefix)."""
    from retrainer.alerts import asset_uri, inbox_uri

    # An S3 listing costs a request: every 5 s there, every second on a local folder.
    poke = 5.0 if project.data.root_uri.startswith("s3://") else ALERT_POKE_SECONDS
    trigger = AlertInboxTrigger(directory=inbox_uri(project.data.root_uri), poke_interval=poke)
    watchers = [AssetWatcher(name=f"{project.name}_alert_inbox", trigger=trigger)]
    return Asset(
        name=f"drift_alert_{project.name}",
        uri=asset_uri(project.name),
        group="retrainer",
        watchers=watchers,
    )


def _zone_asset(project: ProjectConfig, zone: str, name: str, pattern: str) -> Asset:
    """An asset whose watcher fires when files land in a zone of the batch store (local folder or S3 prefix)."""
    # Local folders are listed every 2 s; S3 listings cost requests, so every 15 s.
    poke = 15.0 if project.data.root_uri.startswith("s3://") else 2.0
    trigger = LandingTrigger(root=project.data.root_uri, pattern=pattern, poke_interval=poke, zone=zone)
    watchers = [AssetWatcher(name=f"{project.name}_{zone}", trigger=trigger)]
    return Asset(
        name=f"{name}_{project.name}",
        uri=f"retrainer://{project.name}/{zone}",
        group="retrainer",
        watchers=watchers,
    )


def batches_landed(project: ProjectConfig) -> Asset:
    """New batches in a project's landing zone."""
    return _zone_asset(project, "landing", "batches_landed", project.data.file_pattern)


def labels_arrived(project: ProjectConfig) -> Asset:
    """Late labels in a project's ``labels/`` zone."""
    return _zone_asset(project, "labels", "labels_arrived", "*.parquet")
