"""Shadow promotion: a challenger scored beside the champion, batch by newly labelled batch, until it has won
enough of them to replace it, or is retired.

Pure: the judgement of one batch from its paired comparison, and the tally kept on the challenger's run
(:data:`TALLY_ARTIFACT`, summarised in the version's tag :data:`TALLY_TAG`). The I/O (which batches, the
models' predictions, the alias moves) is in :mod:`retrainer.steps.shadow`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from retrainer.comparison import MetricComparison

if TYPE_CHECKING:
    from retrainer.config import ShadowConfig

TALLY_ARTIFACT = "shadow/tally.json"  # on the challenger's run: its ShadowTally
TALLY_TAG = "retrainer.shadow"  # on the challenger's version: the tally in one line

Outcome = Literal["win", "loss", "tie", "not judged"]
Standing = Literal["promote", "retire", "continue"]


class ShadowJudgement(BaseModel):
    """The challenger beside the champion on one batch's newly labelled rows.

    Attributes:
        batch_id: The batch.
        rows: Labelled rows neither model trained on.
        outcome: ``win`` (the interval of the challenger's relative improvement lies above zero), ``loss``
            (below zero), ``tie`` (it straddles zero) or ``not judged`` (too few rows).
        comparison: The paired bootstrap comparison of the primary metric (None when not judged).
        note: One line, e.g. ``2024-01-22: rmse 0.51 vs 0.73: -0.22 [95% CI -0.25, -0.19]: win``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_id: str
    rows: int
    outcome: Outcome
    comparison: MetricComparison | None = None
    note: str


class ShadowTally(BaseModel):
    """What a challenger has shown against one champion so far.

    Attributes:
        challenger_version: The ``@challenger`` version.
        champion_version: The champion it is judged against (a new champion, e.g. after a rollback, starts a
            new tally).
        since: When the challenger was set, or the tally started.
        judgements: Every judged batch, oldest first (a batch is judged once).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    challenger_version: str
    champion_version: str
    since: datetime
    judgements: list[ShadowJudgement] = Field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        """How many judged batches had ``outcome``."""
        return sum(j.outcome == outcome for j in self.judgements)

    @property
    def judged(self) -> int:
        """Batches judged (ties included, ``not judged`` not)."""
        return sum(j.outcome != "not judged" for j in self.judgements)

    def standing(self, rule: ShadowConfig) -> Standing:
        """``promote`` once it won ``rule.wins`` batches, ``retire`` after ``rule.max_losses`` losses or
        ``rule.max_batches`` judged batches short of its wins, else ``continue``."""
        if self.count("win") >= rule.wins:
            return "promote"
        if self.count("loss") >= rule.max_losses or self.judged >= rule.max_batches:
            return "retire"
        return "continue"

    def text(self, rule: ShadowConfig) -> str:
        """``v3 against v2: 2 wins, 0 losses, 1 tie in 3 batches (3 wins needed, 1 loss retires)``."""
        return (
            f"v{self.challenger_version} against v{self.champion_version}: {self.count('win')} wins, "
            f"{self.count('loss')} losses, {self.count('tie')} ties in {self.judged} batches ({rule.wins} wins "
            f"needed; {rule.max_losses} losses or {rule.max_batches} batches retire it)"
        )


def judge(batch_id: str, rows: int, comparison: MetricComparison | None, min_rows: int) -> ShadowJudgement:
    """The outcome of one batch from the paired comparison of the challenger (as candidate) with the champion."""
    if comparison is None or rows < min_rows:
        return ShadowJudgement(
            batch_id=batch_id,
            rows=rows,
            outcome="not judged",
            note=f"{batch_id}: {rows} newly labelled rows, fewer than the {min_rows} needed to judge",
        )
    if comparison.improvement_low > 0:
        outcome: Outcome = "win"
    elif comparison.improvement_high < 0:
        outcome = "loss"
    else:
        outcome = "tie"
    note = (
        f"{batch_id}: {comparison.metric} {comparison.candidate:.4g} vs {comparison.champion:.4g} on {rows} rows, "
        f"{comparison.improvement:+.1%} [{comparison.confidence:.0%} CI {comparison.improvement_low:+.1%}, "
        f"{comparison.improvement_high:+.1%}]: {outcome}"
    )
    return ShadowJudgement(batch_id=batch_id, rows=rows, outcome=outcome, comparison=comparison, note=note)
