"""The model card of a candidate: what it was trained on, how it compared, and what was decided, in one page.

Written for every candidate, promoted or not, and logged on its MLflow run (``model_card/model_card.md``, the
same as ``model_card/model_card.html``, and ``model_card/differences.png``, the primary metric's difference with
its interval overall and per slice). It is built only from what the decision recorded, so it never disagrees
with the registry's tags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrainer.comparison import MetricComparison, SliceComparison
    from retrainer.config import ProjectConfig
    from retrainer.steps.registry import DecisionRecord


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _interval(comparison: MetricComparison) -> str:
    return f"{comparison.improvement:+.1%} [{comparison.improvement_low:+.1%}, {comparison.improvement_high:+.1%}]"


def render_markdown(
    config: ProjectConfig,
    decision: DecisionRecord,
    *,
    version: str | None,
    run_id: str,
    tags: dict[str, str],
    batches: list[dict[str, Any]],
) -> str:
    """The card as Markdown.

    Args:
        config: The project.
        decision: The gate's decision (with its comparisons, compatibility and slices).
        version: The registered version (None: nothing registered).
        run_id: The candidate run.
        tags: The candidate run's tags (window, holdout start, code version, image, backend).
        batches: The training window's batches: ``batch_id``, ``sha256``, ``rows``, and ``status`` when known.
    """
    t = "retrainer."

    def tag(key: str) -> str:
        return tags.get(f"{t}{key}", "-")

    compared = f"champion v{decision.champion_version}" if decision.champion_version else "no champion"
    name = f"{config.model_name} v{version}" if version else f"{config.model_name}, run {run_id}"
    lines = [
        f"# Model card: {name}",
        "",
        f"**Decision: {decision.state.replace('_', ' ')}.** {decision.reason}",
        "",
        *_review_lines(config, decision),
        *_shadow_lines(config, decision),
        "## Model",
        "",
        f"- Task: {config.task.value}; estimator `{config.estimator_class}`",
        f"- Candidate run: `{run_id}`; cycle `{tag('cycle_id')}`; trigger {tag('trigger')}",
        f"- Code version `{tag('code_version')}`; trained on the `{tag('training_backend')}` backend, image "
        f"`{tag('trainer_image')}` ({tag('trainer_image_id')}), device {tag('trained_on')}",
        f"- Compared with: {compared}",
        "",
        "## Data",
        "",
        f"Held out from training: the rows from {tag('holdout_start')} on.",
        "",
        "| batch | rows | SHA-256 | validation |",
        "|---|---:|---|---|",
        *(
            f"| {b['batch_id']} | {b.get('rows', '-')} | `{str(b.get('sha256', ''))[:16]}…` | "
            f"{b.get('status', '-')} |"
            for b in batches
        ),
        "",
        "## Metrics on the held-out rows",
        "",
        f"Rule: **{decision.rule}** (required improvement {decision.min_improvement:.1%}, allowed loss "
        f"{decision.margin:.1%}); floor {_value(decision.floor)}.",
        "",
    ]
    if decision.comparison is not None:
        c = decision.comparison
        lines += [
            f"| metric | candidate | champion | difference [{c.confidence:.0%} CI] | improvement [CI] |",
            "|---|---:|---:|---|---|",
            f"| {c.metric} (primary) | {_value(c.candidate)} | {_value(c.champion)} | {c.interval_text()} | "
            f"{_interval(c)} |",
        ]
    else:
        lines += ["| metric | candidate |", "|---|---:|", f"| {decision.metric} | {_value(decision.candidate)} |"]
    for check in decision.secondary:
        lines.append(
            f"| {check.metric} | {_value(check.candidate)} | {_value(check.champion)} | "
            f"{'passed' if check.passed else 'failed'}: {check.note} | |"
            if decision.comparison is not None
            else f"| {check.metric} | {_value(check.candidate)} |"
        )
    if decision.comparison is not None:
        c = decision.comparison
        lines += ["", f"Paired bootstrap: {c.resamples} resamples of {c.units} {c.unit}s, seeded."]
    lines += ["", "## Compatibility", ""]
    if decision.compatibility is not None:
        k = decision.compatibility
        lines.append(f"Breaks {k.text()} ({k.broken} of {k.rows}): rows where {k.definition}.")
    else:
        lines.append("No champion to compare with.")
    lines += ["", "## Slices", ""]
    if decision.slices:
        lines += [
            "| slice | rows | candidate | champion | improvement [CI] | Holm p | status |",
            "|---|---:|---:|---:|---|---:|---|",
            *(_slice_row(s) for s in decision.slices),
        ]
    else:
        lines.append("No slice columns configured (`promotion.slices.columns`), or no champion.")
    lines += ["", "## Serving check", "", *_serving_lines(decision), ""]
    return "\n".join(lines)


def _serving_lines(decision: DecisionRecord) -> list[str]:
    serving = decision.serving
    if serving is None:
        return ["Not run: the gate did not promote this candidate (or `promotion.serving.enabled` is false)."]
    lines = [
        f"{serving.reason}.",
        "",
        f"Loaded with `mlflow.pyfunc.load_model` in a fresh process; the newest {serving.candidate.rows} rows of "
        f"batch `{serving.batch_id}` predicted.",
        "",
        "| model | load s | p95 ms per 1,000 rows | peak memory MB | output |",
        "|---|---:|---:|---:|---|",
    ]
    for name, figures in (("candidate", serving.candidate), ("champion", serving.champion)):
        if figures is not None:
            lines.append(
                f"| {name} `{figures.model_uri}` | {figures.load_s:.2f} | {figures.p95_ms_per_1k_rows:.3g} | "
                f"+{figures.peak_memory_mb:.0f} | {figures.problem or 'ok'} |"
            )
    return lines


def _slice_row(check: SliceComparison) -> str:
    interval = _interval(check.comparison) if check.comparison is not None else check.note
    adjusted = "-" if check.adjusted_p is None else f"{check.adjusted_p:.2g}"
    return (
        f"| {check.name} | {check.rows} | {_value(check.candidate)} | {_value(check.champion)} | {interval} | "
        f"{adjusted} | {check.status} |"
    )


def render_html(markdown: str, title: str) -> str:
    """The Markdown card as a standalone HTML page (tables enabled)."""
    from html import escape

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
        "th{background:#f3f3f3}code{background:#f6f6f6;padding:1px 3px}"
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{style}</style></head><body>{body}</body></html>"
    )


def _review_lines(config: ProjectConfig, decision: DecisionRecord) -> list[str]:
    """The reviewer's part: who approved or rejected, or that one is awaited."""
    timeout = config.promotion.approval_timeout_minutes
    if decision.awaiting_approval:
        return [f"**Review:** awaiting a reviewer; with no answer within {timeout:g} minutes it is rejected.", ""]
    if decision.approval is not None:
        return [f"**Review:** {decision.approval.text(timeout)}.", ""]
    return []


def _shadow_lines(config: ProjectConfig, decision: DecisionRecord) -> list[str]:
    """The challenger's shadow: under way, or its batches once it ended."""
    rule = config.promotion.shadow
    if decision.challenger:
        return [
            f"**Shadow:** `@challenger`, scored beside the champion on each newly labelled batch; champion after "
            f"{rule.wins} wins, retired after {rule.max_losses} losses or {rule.max_batches} batches.",
            "",
        ]
    if decision.shadow is None:
        return []
    rows = [
        f"| {j.batch_id} | {j.rows} | {j.outcome} | "
        + (
            "- |"
            if j.comparison is None
            else f"{j.comparison.improvement:+.1%} [{j.comparison.improvement_low:+.1%}, "
            f"{j.comparison.improvement_high:+.1%}] |"
        )
        for j in decision.shadow.judgements
    ]
    return [
        f"**Shadow:** {decision.shadow.text(rule)}.",
        "",
        "| batch | rows | outcome | improvement [CI] |",
        "|---|---:|---|---|",
        *rows,
        "",
    ]


def differences_figure(decision: DecisionRecord) -> Any | None:
    """The primary metric's relative improvement with its interval, overall and per tested slice (None: no
    champion to compare with)."""
    if decision.comparison is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [("overall", decision.comparison, "ok")] + [
        (s.name, s.comparison, s.status) for s in decision.slices if s.comparison is not None
    ]
    figure = Figure(figsize=(7, 0.45 * len(rows) + 1.2))
    axes = figure.subplots()
    for y, (_, c, status) in enumerate(reversed(rows)):
        color = "tab:red" if status == "regressed" else "tab:blue"
        axes.errorbar(
            c.improvement * 100,
            y,
            xerr=[[(c.improvement - c.improvement_low) * 100], [(c.improvement_high - c.improvement) * 100]],
            fmt="o",
            color=color,
            capsize=3,
        )
    axes.set_yticks(range(len(rows)), [label for label, _, _ in reversed(rows)])
    axes.axvline(0, color="grey", linewidth=0.8)
    if decision.min_improvement:
        axes.axvline(decision.min_improvement * 100, color="tab:green", linestyle="--", linewidth=0.8)
    axes.set_xlabel(
        f"improvement of {decision.metric} over the champion, % ({decision.comparison.confidence:.0%} CI)"
    )
    figure.tight_layout()
    return figure
