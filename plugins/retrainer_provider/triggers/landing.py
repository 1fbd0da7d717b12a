"""An event trigger that fires when new batch files land (data-aware scheduling of the drift monitor)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class LandingTrigger(BaseEventTrigger):
    """Fires once for the batch files that appeared in a project's landing zone since the last event.

    Args:
        root: The project's local batch store (``data.root_uri``).
        pattern: Glob of batch files (``data.file_pattern``).
        poke_interval: Seconds between scans.
    """

    def __init__(self, root: str, pattern: str = "*.parquet", poke_interval: float = 2.0) -> None:
        super().__init__()
        self.root = root
        self.pattern = pattern
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and arguments, to re-create the trigger in the triggerer."""
        return (
            "retrainer_provider.triggers.landing.LandingTrigger",
            {"root": self.root, "pattern": self.pattern, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Scan until new batches appear, then yield their ids."""
        from retrainer.alerts import announce_new_landings

        root = Path(self.root)
        args = (root / "landing", root / "catalog", root / "alerts" / "announced", self.pattern)
        while True:
            batch_ids = await asyncio.to_thread(announce_new_landings, *args)
            if batch_ids:
                self.log.info("new batches landed: %s", ", ".join(batch_ids))
                yield TriggerEvent({"batch_ids": batch_ids, "via": "landing"})
                return
            await asyncio.sleep(self.poke_interval)
