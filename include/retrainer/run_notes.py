"""What each run decided, in the words its Airflow run note shows.

A promoted and a rejected cycle both end in Airflow's green *success*; the note says which, first line first:
``promoted v9: rmse 28.6 vs 30.4 of v8 (-5.9%)``, ``rejected v8: ...``, ``quarantined 2013-02-11: 2/37
expectations failed``. The lines below give the reason and links (Markdown: Airflow renders notes). Notes are
built from the records the steps write, so the note, ``retrainer report`` and the model page agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrainer.links import Links, relative_to_root

if TYPE_CHECKING:
    from retrainer.steps.records import CycleRecord
    from retrainer.steps.rollback import RollbackResult

MAX_NOTE = 1000  # Airflow's limit on a run note


def _score(value: float) -> str:
    return f"{value:.4g}"


def _headline(record: CycleRecord) -> str:
    """The note's first line: what the cycle decided, with the scores that decided it."""
    decision = record.decision
    if record.quarantined:
        return "; ".join(f"quarantined {q.batch_id}: {q.summary}" for q in record.quarantined)
    if decision is None:
        return record.outcome
    scores = f"{decision.metric} {_score(decision.candidate)}"
    if decision.champion is not None and decision.champion_version is not None:
        scores += f" vs {_score(decision.champion)} of v{decision.champion_version}"
        gain = decision.relative_improvement
        if gain is not None:  # as a change of the metric: -5.9% for an rmse 5.9% lower
            scores += f" ({(gain if decision.greater_is_better else -gain):+.1%})"
    return f"{record.outcome}: {scores}"


def cycle_note(record: CycleRecord, links: Links | None = None, project: str | None = None) -> str:
    """The run note of a retraining cycle (Markdown, at most :data:`MAX_NOTE` characters).

    Args:
        record: The cycle's record.
        links: Where the UIs are, to link the model version and the reports (None: no links).
        project: The project's name (for the model page's report links).
    """
    lines = [_headline(record), ""]
    decision = record.decision
    if decision is not None:
        lines.append(f"- why: {decision.reason}")
    elif record.error and not record.quarantined:
        lines.append(f"- why: {record.error}")
    if record.drift is not None:
        lines.append(f"- drift: {record.drift.summary}")
    if record.alerts:
        lines.append(f"- started by: {'; '.join(a.summary for a in record.alerts)}")
    if links is not None:
        lines += _link_lines(record, links, project)
    return _clip("\n".join(lines).rstrip())


def _link_lines(record: CycleRecord, links: Links, project: str | None) -> list[str]:
    found = []
    decision = record.decision
    url = links.model_version(decision.model, decision.version) if decision and decision.version else None
    if decision is not None and url:
        found.append(f"[model version v{decision.version}]({url})")
    if project is not None:
        found.append(f"[model page]({links.model_page(project)})")
    return [f"- {' · '.join(found)}"] if found else []


def rollback_note(result: RollbackResult, links: Links | None = None) -> str:
    """The run note of a rollback: which version serves again, from which, and why."""
    lines = [
        f"rolled back {result.model}: v{result.to_version} is champion again (was v{result.from_version})",
        "",
        f"- why: {result.reason}",
    ]
    if result.by:
        lines.append(f"- by: {result.by}")
    if links is not None and (url := links.model_version(result.model, result.to_version)):
        lines.append(f"- [model version v{result.to_version}]({url})")
    return _clip("\n".join(lines))


def report_path(uri: str | None, root_uri: str) -> str | None:
    """A report's path under the data root, for :meth:`Links.report` (None when it lies elsewhere)."""
    return relative_to_root(uri, root_uri) if uri else None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_NOTE else text[: MAX_NOTE - 1] + "…"
