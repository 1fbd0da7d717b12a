"""An event trigger that fires when new files land in a zone of a batch store (the drift monitor's schedule)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class LandingTrigger(BaseEventTrigger):
    """Fires once for the files that appeared in a zone of a project's batch store since the last event.

    Args:
        root: The project's batch store (``data.root_uri``): a local folder or an S3 prefix (boto3 reads
            credentials and ``AWS_ENDPOINT_URL`` from the triggerer's environment).
        pattern: Glob of the files (``data.file_pattern``).
        poke_interval: Seconds between scans (a listing: cheap, and no worker slot is held).
        zone: ``landing`` (new batches; those already in the catalog are not new) or ``labels`` (late labels).
    """

    def __init__(
        self, root: str, pattern: str = "*.parquet", poke_interval: float = 2.0, zone: str = "landing"
    ) -> None:
        super().__init__()
        self.root = root
        self.pattern = pattern
        self.poke_interval = poke_interval
        self.zone = zone

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and arguments, to re-create the trigger in the triggerer."""
        return (
            "retrainer_provider.triggers.landing.LandingTrigger",
            {"root": self.root, "pattern": self.pattern, "poke_interval": self.poke_interval, "zone": self.zone},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Scan until new files appear, then yield their ids."""
        from retrainer.alerts import announce_new_files
        from retrainer.storage import join

        known = join(self.root, "catalog") if self.zone == "landing" else None
        args = (join(self.root, self.zone), join(self.root, "alerts", "announced", self.zone), self.pattern, known)
        while True:
            file_ids = await asyncio.to_thread(announce_new_files, *args)
            if file_ids:
                self.log.info("new files in %s: %s", self.zone, ", ".join(file_ids))
                yield TriggerEvent({"ids": file_ids, "zone": self.zone})
                return
            await asyncio.sleep(self.poke_interval)
