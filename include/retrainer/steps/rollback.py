"""Rolling ``@champion`` back: an event of its own wherever users look.

The move goes into the alias history; the version rolled back from says so in its tags and its registry
description (which said "promoted" until then), and so does the version restored; a record under
``reports/rollbacks/`` of the data root gives the rollback its row in ``retrainer report``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from retrainer import history, locks, storage
from retrainer.catalog import Catalog
from retrainer.steps.common import CHAMPION, TAG, StepResult, champion_version
from retrainer.steps.registry import champion_lock

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

FOLDER = "rollbacks"
"""Where the rollback records go, under the project's ``reports/``."""

_EARLIER = " | before: "


class RollbackResult(StepResult):
    """Where ``@champion`` moved back from and to, why, by whom and when.

    Attributes:
        record_uri: The rollback's record under ``reports/rollbacks/`` (empty in records read back).
    """

    model: str
    from_version: str
    to_version: str
    reason: str
    by: str = ""
    at: datetime | None = None
    record_uri: str = ""


def rollback(
    config: ProjectConfig,
    tracking: Tracking,
    to_version: str | None = None,
    reason: str = "manual rollback",
    *,
    by: str | None = None,
    lock_wait_s: float = 300.0,
) -> RollbackResult:
    """Move ``@champion`` back: to ``to_version``, or to the champion the current one replaced.

    Both versions are tagged and described with the rollback, the move is appended to the alias history, and a
    record is written for ``retrainer report``.

    Args:
        by: Who rolls back (a person, or the Airflow run); default: this process.

    Raises:
        RuntimeError: There is no champion, or no earlier champion to go back to.
    """
    from mlflow.exceptions import MlflowException

    owner = locks.default_owner("rollback")
    with locks.held(champion_lock(config), owner, wait_s=lock_wait_s), tracking.active():
        client = tracking.client()
        current = champion_version(client, config)
        if current is None:
            raise RuntimeError(f"{config.model_name} has no champion to roll back")
        target = to_version or current.tags.get(f"{TAG}previous_champion")
        if not target or target == "none":
            raise RuntimeError(
                f"v{current.version} of {config.model_name} replaced no earlier champion; name --to-version"
            )
        if str(target) == str(current.version):
            raise RuntimeError(f"v{target} of {config.model_name} is already the champion: nothing to roll back")
        try:
            restored = client.get_model_version(config.model_name, target)
        except MlflowException:
            raise RuntimeError(f"{config.model_name} has no version {target} to roll back to") from None
        at = datetime.now(UTC)  # to the microsecond: two rollbacks in one second keep their order
        when = at.isoformat()
        client.set_registered_model_alias(config.model_name, CHAMPION, target)
        history.append_move(
            client,
            config.model_name,
            alias=CHAMPION,
            from_version=str(current.version),
            to_version=str(target),
            action="rollback",
            by=by or owner,
            reason=reason,
        )
        for version, tags, text in (
            (
                current,
                {"rolled_back_at": when, "rollback_reason": reason, "rolled_back_to": str(target)},
                f"rolled back on {when} (v{target} is champion again): {reason}",
            ),
            (
                restored,
                {"restored_at": when, "restore_reason": reason, "restored_from": str(current.version)},
                f"champion again since {when} (rolled back from v{current.version}): {reason}",
            ),
        ):
            for key, value in tags.items():
                client.set_model_version_tag(config.model_name, version.version, f"{TAG}{key}", value)
            client.update_model_version(
                config.model_name, version.version, description=f"{text}{_EARLIER}{_decision(version.description)}"
            )
        result = RollbackResult(
            model=config.model_name,
            from_version=str(current.version),
            to_version=str(target),
            reason=reason,
            by=by or owner,
            at=at,
        )
        stamp = at.strftime("%Y%m%dT%H%M%S.%fZ")
        uri = storage.join(Catalog(config).reports, FOLDER, f"{stamp}-v{current.version}-to-v{target}.json")
        storage.write_bytes(uri, result.model_dump_json(indent=2).encode())
    return result.model_copy(update={"record_uri": uri})


def _decision(description: str | None) -> str:
    """What the gate said of a version, without what earlier rollbacks put before it."""
    return (description or "").rsplit(_EARLIER, 1)[-1] or "-"


def read_rollbacks(config: ProjectConfig) -> list[RollbackResult]:
    """Every recorded rollback of the project, oldest first."""
    folder = storage.join(Catalog(config).reports, FOLDER)
    uris = storage.list_files(folder, "*.json")
    records = [RollbackResult.model_validate_json(storage.read_bytes(uri)) for uri in uris]
    return sorted(records, key=lambda r: (r.at or datetime.min.replace(tzinfo=UTC), r.from_version))
