"""An event trigger that turns JSON alerts dropped into a folder into asset events, with their payload."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class AlertInboxTrigger(BaseEventTrigger):
    """Fires once for the oldest valid alert in ``directory``, with the alert as the event's payload.

    Used by an ``AssetWatcher``: the triggerer runs it without holding a worker slot, and the payload lands in
    the asset event's ``extra["payload"]``. Invalid files are moved to ``rejected/`` with the reason and
    skipped; valid ones to ``processed/`` (see ``retrainer.alerts.claim_next``).

    Args:
        directory: The project's alert inbox: a local folder or an S3 prefix (boto3 reads credentials and
            ``AWS_ENDPOINT_URL`` from the triggerer's environment).
        poke_interval: Seconds between scans of the folder.
    """

    def __init__(self, directory: str, poke_interval: float = 1.0) -> None:
        super().__init__()
        self.directory = directory
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and arguments, to re-create the trigger in the triggerer."""
        return (
            "retrainer_provider.triggers.alert_inbox.AlertInboxTrigger",
            {"directory": self.directory, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Scan until a valid alert is claimed, then yield it."""
        from retrainer.alerts import AlertError, claim_next

        while True:
            claimed = await asyncio.to_thread(claim_next, self.directory)
            if claimed is None:
                await asyncio.sleep(self.poke_interval)
                continue
            path, alert = claimed
            if isinstance(alert, AlertError):
                self.log.warning("rejected %s: %s", path, alert)
                continue
            self.log.info("alert %s: %s", path, alert.describe())
            yield TriggerEvent({"alert": alert.model_dump(mode="json"), "file": str(path), "via": "inbox"})
            return
