"""The alias history of a registered model: every move of ``@champion`` (or ``@challenger``), kept with the model.

MLflow keeps only where an alias points now. Each move the platform makes (a promotion, a rollback) is appended
as one tag on the registered model, ``retrainer.alias_history.000007``, whose value is the move as JSON: when,
which alias, from which version to which, who or which run moved it, and why. Appending happens under the
project's alias lease (:mod:`retrainer.locks`), so the sequence has no gaps or duplicates; the history lives in
the registry beside the model, and is read back with :func:`read_history`. It answers "which version was serving
on date X" (:func:`serving_at`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from mlflow import MlflowClient

PREFIX = "retrainer.alias_history."
MAX_REASON = 2000  # a tag value holds at most 5,000 characters; the rest of the reason is on the run

# promotion: the gate moved @champion; approval: a reviewer did; rollback: back to an earlier champion;
# shadow: a candidate became @challenger; shadow_promotion: the challenger won and became @champion;
# retirement: the challenger lost (or ran out of batches) and its alias was removed.
Action = Literal["promotion", "rollback", "approval", "shadow", "shadow_promotion", "retirement"]


class AliasMove(BaseModel):
    """One move of an alias.

    Attributes:
        sequence: Its place in the model's history (1, 2, ...).
        at: When the alias moved (UTC).
        alias: ``champion`` or ``challenger``.
        from_version: Where it pointed before (None: nowhere).
        to_version: Where it points now (None: the alias was removed, as when a challenger is retired).
        action: ``promotion``, ``rollback``, ``approval``, ``shadow``, ``shadow_promotion`` or ``retirement``.
        by: Who moved it: the run or person, e.g. ``promote of run 3f2a… on worker-1 (pid 812)``.
        run_id: The candidate run, for a promotion.
        cycle_id: The cycle, when a cycle moved it.
        reason: Why, in one line.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sequence: int
    at: datetime
    alias: str
    from_version: str | None
    to_version: str | None
    action: Action
    by: str
    run_id: str | None = None
    cycle_id: str | None = None
    reason: str


def read_history(client: MlflowClient, model: str) -> list[AliasMove]:
    """Every recorded move of the model's aliases, oldest first (empty for a model that does not exist)."""
    from mlflow.exceptions import MlflowException

    from retrainer.tracking import registry_missing

    try:
        tags = client.get_registered_model(model).tags
    except MlflowException as error:
        if registry_missing(error):
            return []
        raise
    moves = [AliasMove.model_validate_json(value) for key, value in tags.items() if key.startswith(PREFIX)]
    return sorted(moves, key=lambda move: move.sequence)


def append_move(
    client: MlflowClient,
    model: str,
    *,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    action: Action,
    by: str,
    reason: str,
    run_id: str | None = None,
    cycle_id: str | None = None,
    at: datetime | None = None,
) -> AliasMove:
    """Append one move to the model's history. Call it while holding the project's alias lease."""
    existing = read_history(client, model)
    move = AliasMove(
        sequence=(existing[-1].sequence if existing else 0) + 1,
        at=(at or datetime.now(UTC)).replace(microsecond=0),
        alias=alias,
        from_version=from_version,
        to_version=to_version,
        action=action,
        by=by,
        run_id=run_id,
        cycle_id=cycle_id,
        reason=reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…",
    )
    client.set_registered_model_tag(model, f"{PREFIX}{move.sequence:06d}", move.model_dump_json())
    return move


def serving_at(history: list[AliasMove], when: datetime, alias: str = "champion") -> str | None:
    """The version ``alias`` pointed at, at ``when``, by the recorded history (None: not set then)."""
    version = None
    for move in history:
        if move.alias == alias and move.at <= when:
            version = move.to_version
    return version
