"""Human approval of a promotion: what the reviewer is shown, and what they answered.

With ``promotion.approval: required`` a candidate the gate promotes is registered but ``@champion`` does not
move (:func:`retrainer.steps.registry.promote` records it as awaiting approval). A reviewer answers in the
Airflow UI (the ``approve`` task, a human-in-the-loop operator) or with ``retrainer approve``; then
:func:`retrainer.steps.registry.conclude_approval` moves the alias, or records the rejection, under the same
lease and compare-and-set as any promotion.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.steps.registry import DecisionRecord

APPROVE = "Approve"
REJECT = "Reject"


class Approval(BaseModel):
    """A reviewer's answer to a promotion the gate allowed.

    Attributes:
        approved: Whether ``@champion`` may move to the candidate.
        by: Who answered; None when nobody did within the timeout and the default (reject) applied.
        at: When.
        timed_out: The answer is the timeout's default.
        comment: The reviewer's note, if any.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    approved: bool
    by: str | None
    at: datetime
    timed_out: bool = False
    comment: str = ""

    def text(self, timeout_minutes: float | None = None) -> str:
        """``approved by alice at 2026-12-02T10:00:00+00:00 ("looks fine")`` or the timeout's default."""
        if self.timed_out or self.by is None:
            within = f" within {timeout_minutes:g} minutes" if timeout_minutes else ""
            return f"rejected: no reviewer answered{within} (the default is to reject)"
        note = f' ("{self.comment}")' if self.comment else ""
        return f"{'approved' if self.approved else 'rejected'} by {self.by} at {self.at.isoformat()}{note}"


class ApprovalRequest(BaseModel):
    """What the reviewer sees: a subject line and a Markdown body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str
    body: str


def approval_request(config: ProjectConfig, record: DecisionRecord, mlflow_url: str | None) -> ApprovalRequest:
    """The request for a promotion awaiting approval: the gate's decision, its intervals, the broken rows, the
    slices that did not pass, the serving check, and links to the model version and its card in MLflow.

    Args:
        mlflow_url: The MLflow UI the reviewer can open (None: no links).
    """
    comparison = record.comparison
    champion = f"v{record.champion_version}" if record.champion_version else "no champion"
    lines = [
        f"The promotion gate would move **@champion** of `{record.model}` from {champion} to "
        f"**v{record.version}** (run `{record.run_id}`, cycle `{record.cycle_id or '-'}`).",
        "",
        f"**Gate:** {record.reason}",
        "",
        f"- {record.metric}: candidate {record.candidate:.4g}"
        + ("" if record.champion is None else f" vs champion {record.champion:.4g}")
        + ("" if comparison is None else f", difference {comparison.interval_text()}"),
    ]
    for check in (c for c in record.secondary if c.note):
        lines.append(f"- {check.note}{'' if check.passed else ' (failed)'}")
    if record.compatibility is not None:
        lines.append(f"- Broken rows: {record.compatibility.text()}")
    unsettled = [s for s in record.slices if s.status != "passed"]
    if unsettled:
        lines.append("- Slices not passed: " + ", ".join(f"{s.name} ({s.status})" for s in unsettled))
    elif record.slices:
        lines.append(f"- All {len(record.slices)} slices passed")
    if record.serving is not None:
        lines.append(f"- Serving: {record.serving.reason}")
    if mlflow_url and record.version:
        base = mlflow_url.rstrip("/")
        lines += [
            "",
            f"[Model version v{record.version} in MLflow]({base}/#/models/{record.model}/versions/"
            f"{record.version}) · [its run]({base}/#/runs/{record.run_id}), whose artifacts hold the model card "
            "(`model_card/model_card.html`) and the plot of the differences",
        ]
    lines += [
        "",
        f"Without an answer within {config.promotion.approval_timeout_minutes:g} minutes the candidate is "
        "rejected.",
    ]
    subject = f"Promote {record.model} v{record.version}? ({record.metric} {record.candidate:.4g}"
    subject += ")" if record.champion is None else f" vs {record.champion:.4g})"
    return ApprovalRequest(subject=subject, body="\n".join(lines))
