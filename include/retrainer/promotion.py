"""The promotion gate: a candidate replaces the champion only if it is better by the configured margin.

Both models are scored on the same held-out rows before this is called; the gate is a pure function of those
scores and the project's promotion rule, so every decision can be re-derived from what was recorded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from retrainer.config import ProjectConfig


class Verdict(StrEnum):
    """Outcome of the gate."""

    PROMOTE = "promoted"
    REJECT = "rejected"


@dataclass(frozen=True)
class Decision:
    """A promotion decision and why it was made."""

    verdict: Verdict
    reason: str
    metric: str
    greater_is_better: bool
    candidate: float
    champion: float | None
    champion_version: str | None
    relative_improvement: float | None
    min_improvement: float
    floor: float | None

    @property
    def promoted(self) -> bool:
        """Whether the candidate becomes the champion."""
        return self.verdict is Verdict.PROMOTE

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the decision artifact)."""
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def relative_improvement(candidate: float, champion: float, greater_is_better: bool) -> float:
    """How much better the candidate is, relative to the champion's score (positive = better).

    A champion scoring exactly 0 has no scale: the absolute gain is returned (it must stay finite for JSON).
    """
    gain = candidate - champion if greater_is_better else champion - candidate
    return gain / abs(champion) if champion != 0 else gain


def decide(
    config: ProjectConfig,
    candidate: float,
    champion: float | None,
    champion_version: str | None = None,
) -> Decision:
    """Apply the project's promotion rule.

    Args:
        config: The project (primary metric, its direction, margin and floor).
        candidate: The candidate's primary metric on the held-out rows.
        champion: The champion's primary metric on the same rows, or None if there is no champion.
        champion_version: The champion's registry version, recorded in the decision.

    Returns:
        The decision with a one-line reason.

    Raises:
        ValueError: A score is not a finite number.
    """
    metric = config.metric.name
    higher = config.metric.greater_is_better
    for label, value in (("candidate", candidate), ("champion", champion)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{label} {metric} is not a finite number: {value}")
    margin = config.promotion.min_improvement
    floor = config.promotion.floor
    common = {
        "metric": metric,
        "greater_is_better": higher,
        "candidate": candidate,
        "champion": champion,
        "champion_version": champion_version,
        "min_improvement": margin,
        "floor": floor,
    }
    if champion is None:
        if floor is not None and (candidate < floor if higher else candidate > floor):
            bound = "at least" if higher else "at most"
            reason = f"no champion yet and {metric} {candidate:.4g} misses the floor ({bound} {floor:.4g})"
            return Decision(Verdict.REJECT, reason, relative_improvement=None, **common)
        reason = f"first model: {metric} {candidate:.4g}" + (
            f" meets the floor {floor:.4g}" if floor is not None else ""
        )
        return Decision(Verdict.PROMOTE, reason, relative_improvement=None, **common)

    gain = relative_improvement(candidate, champion, higher)
    comparison = f"{metric} {candidate:.4g} vs champion v{champion_version} {champion:.4g} ({gain:+.2%})"
    # A tolerance so that an improvement of exactly the margin (e.g. 10.0 -> 9.9 for 1 %) passes.
    if gain > 0 and gain >= margin - 1e-9:
        return Decision(
            Verdict.PROMOTE, f"{comparison} beats the required {margin:.2%}", relative_improvement=gain, **common
        )
    return Decision(
        Verdict.REJECT,
        f"{comparison} is short of the required {margin:.2%}",
        relative_improvement=gain,
        **common,
    )
