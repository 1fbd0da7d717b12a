"""Shadow mode: a candidate the gate promotes becomes @challenger, is judged beside the champion on each newly
labelled batch neither trained on, and replaces it only after enough wins (or is retired after a loss).

Real local MLflow store, synthetic projects: a champion trained on 20 rows is clearly beaten by one trained on
the whole window, so the outcomes are known.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from retrainer import steps
from retrainer.comparison import compare
from retrainer.config import PromotionConfig, ShadowConfig
from retrainer.shadow import ShadowTally, judge
from retrainer.tracking import Tracking

pytestmark = pytest.mark.usefixtures("module_mlflow")

TAG = steps.TAG

# The serving check (a fresh process per model, seconds each) has its own tests: shadow mode needs none.
NO_SERVING = {"serving": {"enabled": False}}


def _tracking() -> Tracking:
    return Tracking.from_env()


def _aliases(name: str) -> dict[str, str]:
    return {a: str(v) for a, v in _tracking().client().get_registered_model(name).aliases.items()}


def _cycle(config: Any, cutoff: Any, cycle_id: str, **train_options: Any) -> Any:
    training = steps.train(config, _tracking(), cutoff, cycle_id, **train_options)
    evaluation = steps.evaluate(config, _tracking(), training.run_id)
    return steps.promote(config, _tracking(), training.run_id, evaluation)


def _comparison(shift: float, rows: int = 400) -> Any:
    """The paired comparison of a candidate whose errors are ``shift`` smaller (negative: larger) than the
    champion's, on ``rows`` rows with noise."""
    rng = np.random.default_rng(3)
    y = rng.normal(0, 1, rows)
    champion = y + rng.normal(0, 1.0, rows)
    candidate = y + rng.normal(0, 1.0 - shift, rows)
    return compare({"rmse": False}, "regression", y, candidate, champion, resamples=500)["rmse"]


def test_a_batch_is_a_win_a_loss_or_a_tie_by_its_interval_and_few_rows_are_not_judged() -> None:
    assert judge("w", 400, _comparison(0.5), min_rows=100).outcome == "win"
    assert judge("w", 400, _comparison(-0.5), min_rows=100).outcome == "loss"
    assert judge("w", 400, _comparison(0.0), min_rows=100).outcome == "tie"
    few = judge("w", 40, _comparison(0.5, rows=40), min_rows=100)
    assert few.outcome == "not judged" and few.comparison is None
    assert few.note == "w: 40 newly labelled rows, fewer than the 100 needed to judge"
    win = judge("2024-01-15", 400, _comparison(0.5), min_rows=100)
    assert win.note.startswith("2024-01-15: rmse ") and win.note.endswith(": win") and "[95% CI +" in win.note


def test_the_tally_promotes_after_its_wins_and_retires_after_its_losses_or_batches() -> None:
    from datetime import UTC, datetime

    rule = ShadowConfig(wins=2, max_losses=2, max_batches=4, min_rows=100)
    outcomes = {"win": _comparison(0.5), "loss": _comparison(-0.5), "tie": _comparison(0.0)}

    def tally(*kinds: str) -> ShadowTally:
        judgements = [judge(f"b{i}", 400, outcomes[k], 100) for i, k in enumerate(kinds)]
        assert [j.outcome for j in judgements] == list(kinds)
        return ShadowTally(
            challenger_version="3",
            champion_version="2",
            since=datetime(2026, 1, 1, tzinfo=UTC),
            judgements=judgements,
        )

    assert tally("win").standing(rule) == "continue"
    assert tally("win", "tie", "win").standing(rule) == "promote"
    assert tally("loss", "win", "loss").standing(rule) == "retire"
    assert tally("tie", "tie", "win", "tie").standing(rule) == "retire"  # 4 batches, short of 2 wins
    assert tally("win", "loss").text(rule) == (
        "v3 against v2: 1 wins, 1 losses, 0 ties in 2 batches (2 wins needed; 2 losses or 4 batches retire it)"
    )


def test_shadow_with_approval_or_unreachable_wins_is_refused() -> None:
    with pytest.raises(ValueError, match=r"mode: shadow promotes the challenger .* use approval: none"):
        PromotionConfig(mode="shadow", approval="required")
    with pytest.raises(ValueError, match=r"wins \(5\) exceeds max_batches \(3\)"):
        ShadowConfig(wins=5, max_batches=3)


def test_a_challenger_that_wins_its_batches_becomes_champion_and_every_move_is_in_the_history(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    import mlflow

    project = synthetic_project(
        "shadowed", promotion={**NO_SERVING, "mode": "shadow", "shadow": {"wins": 2, "min_rows": 50}}, window=2
    )
    project.land_and_accept(range(2))
    config, cutoff = project.config, synth.cutoff_after(1)
    first = _cycle(config, cutoff, "first", max_train_rows=20)
    assert first.promoted and first.reason.startswith("first model")  # nothing to shadow yet
    second = _cycle(config, cutoff, "second")
    assert second.verdict == "promoted" and second.challenger and not second.promoted
    assert second.state == "challenger" and second.version == "2"
    assert "shadow mode: @challenger until it wins 2 newly labelled batches against v1" in second.reason
    assert _aliases("shadowed") == {"champion": "1", "challenger": "2"}
    version = _tracking().client().get_model_version("shadowed", "2")
    assert version.tags[f"{TAG}decision"] == "challenger"
    assert version.tags["retrainer.shadow"].startswith("v2 against v1: 0 wins, 0 losses, 0 ties in 0 batches")
    record = steps.CycleRecord(cycle_id="second", recorded_at=second.decided_at, decision=second)
    assert record.outcome == "challenger v2" and record.outcome_kind == "challenger"

    # Nothing newer than its training data yet: nothing judged.
    idle = steps.shadow_evaluation(config, _tracking())
    assert idle.action == "continuing" and idle.judgements == []
    # A labelled week: judged once, a win.
    project.land_and_accept([2])
    won = steps.shadow_evaluation(config, _tracking())
    assert [(j.batch_id, j.outcome) for j in won.judgements] == [(synth.batch_id(2), "win")], won.summary
    assert won.action == "continuing" and _aliases("shadowed")["champion"] == "1"
    assert steps.shadow_evaluation(config, _tracking()).judgements == []  # judged once
    # A week that lands without its labels waits for them; the next labelled week is the second win.
    catalog = project.catalog
    unlabelled = synth.week(3, 200)
    unlabelled["y"] = float("nan")
    catalog.land(synth.batch_id(3), unlabelled)
    project.land([4])
    catalog.register_new()
    for week in (3, 4):
        catalog.accept(synth.batch_id(week), {"success": True, "summary": "accepted by the test"})
    promoted = steps.shadow_evaluation(config, _tracking())
    assert [j.batch_id for j in promoted.judgements] == [synth.batch_id(4)], promoted.summary
    assert promoted.action == "promoted" and promoted.summary.startswith(
        "promoted: v2 against v1: 2 wins, 0 losses"
    )
    assert _aliases("shadowed") == {"champion": "2"}

    moves = steps.alias_history(config, _tracking())
    assert [(m.alias, m.from_version, m.to_version, m.action) for m in moves] == [
        ("champion", None, "1", "promotion"),
        ("challenger", None, "2", "shadow"),
        ("champion", "1", "2", "shadow_promotion"),
        ("challenger", "2", None, "shadow_promotion"),
    ]
    assert (
        moves[2].reason.startswith("won its shadow: v2 against v1: 2 wins")
        and synth.batch_id(4) in moves[2].reason
    )
    tags = _tracking().client().get_model_version("shadowed", "2").tags
    assert tags[f"{TAG}decision"] == "promoted" and tags[f"{TAG}shadow_outcome"] == "won"
    with _tracking().active():
        decision = steps.DecisionRecord.model_validate(
            mlflow.artifacts.load_dict(f"runs:/{second.run_id}/decision/decision.json")
        )
        card = mlflow.artifacts.load_text(f"runs:/{second.run_id}/model_card/model_card.md")
    assert decision.promoted and decision.shadow is not None and decision.shadow.count("win") == 2
    assert decision.reason.endswith(f"at its cycle: {second.reason}")
    assert "**Shadow:** v2 against v1: 2 wins" in card and f"| {synth.batch_id(2)} | 200 | win | " in card
    # With no challenger left, nothing is judged.
    assert steps.shadow_evaluation(config, _tracking()).summary == "shadowed has no @challenger"


def test_a_challenger_that_loses_a_batch_is_retired_and_the_champion_stays(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project(
        "retired", promotion={**NO_SERVING, "mode": "shadow", "shadow": {"wins": 2, "min_rows": 50}}
    )
    project.land_and_accept(range(2))
    config, cutoff = project.config, synth.cutoff_after(1)
    assert _cycle(config, cutoff, "first").promoted
    tiny = _cycle(config, cutoff, "tiny", max_train_rows=20)
    assert tiny.verdict == "rejected" and tiny.version == "2"
    # Made challenger out of band (no tally of ours): it is judged all the same.
    _tracking().client().set_registered_model_alias("retired", steps.CHALLENGER, "2")
    project.land_and_accept([2], rows=400)
    outcome = steps.shadow_evaluation(config, _tracking())
    assert [j.outcome for j in outcome.judgements] == ["loss"], outcome.summary
    assert outcome.action == "retired" and _aliases("retired") == {"champion": "1"}
    [*_, retirement] = steps.alias_history(config, _tracking())
    assert (retirement.alias, retirement.from_version, retirement.to_version, retirement.action) == (
        "challenger",
        "2",
        None,
        "retirement",
    )
    assert retirement.reason.startswith("retired from shadow: v2 against v1: 0 wins, 1 losses")
    tags = _tracking().client().get_model_version("retired", "2").tags
    assert tags[f"{TAG}shadow_outcome"] == "retired" and tags[f"{TAG}decision"] == "rejected"


def test_late_labels_of_the_challengers_window_are_evidence_once_they_arrive(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project(
        "late", promotion={**NO_SERVING, "mode": "shadow", "shadow": {"wins": 1, "min_rows": 50}}
    )
    project.land_and_accept(range(2))
    catalog = project.catalog
    week = synth.week(2, 200)
    labels = week[["y"]].copy()
    week["y"] = float("nan")
    catalog.land(synth.batch_id(2), week)
    catalog.register_new()
    catalog.accept(synth.batch_id(2), {"success": True, "summary": "accepted by the test"})
    config, cutoff = project.config, synth.cutoff_after(2)
    assert _cycle(config, cutoff, "first", max_train_rows=20).promoted
    challenger = _cycle(config, cutoff, "second")
    assert challenger.challenger, challenger.reason
    assert steps.shadow_evaluation(config, _tracking()).judgements == []  # week 2 has no labels yet
    catalog.land_labels(synth.batch_id(2), labels)
    assert steps.concept_drift(config, _tracking()).registered == [synth.batch_id(2)]
    outcome = steps.shadow_evaluation(config, _tracking())
    assert [(j.batch_id, j.outcome) for j in outcome.judgements] == [(synth.batch_id(2), "win")], outcome.summary
    assert outcome.action == "promoted" and _aliases("late") == {"champion": "2"}


def test_cli_shadow_prints_the_outcome(synthetic_project: Callable[..., Any]) -> None:
    import json

    from typer.testing import CliRunner

    from retrainer.cli import app

    project = synthetic_project("cli_shadow", promotion={**NO_SERVING, "mode": "shadow"})
    result = CliRunner().invoke(app, ["shadow", "-c", str(project.path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"] == "cli_shadow has no @challenger"
