"""Unit tests of retrainer.steps (train, evaluate, promote, rollback, record) and of the CLI.

The steps run for real against a local SQLite MLflow store (no server) on the synthetic project; batches are
accepted with ``Catalog.accept`` instead of Great Expectations. One store is shared by the module; tests that
change the registry each use their own registered model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import steps, storage
from retrainer.catalog import BatchStatus, CatalogError
from retrainer.config import parse_config
from retrainer.tracking import Tracking

pytestmark = pytest.mark.usefixtures("module_mlflow")

TAG = steps.TAG

# Tests of the alias (rollback, races, history) skip the serving check: a fresh process per model, tested above.
NO_SERVING = {"serving": {"enabled": False}}


def _tracking() -> Tracking:
    """The store the fixtures set up (steps are handed it explicitly)."""
    return Tracking.from_env()


def _client() -> Any:
    return _tracking().client()


def _champion(name: str) -> str:
    return str(_client().get_model_version_by_alias(name, steps.CHAMPION).version)


def _version_tags(name: str, version: str) -> dict[str, str]:
    return _client().get_model_version(name, version).tags


def _cycle(config: Any, cutoff: Any, cycle_id: str, **train_options: Any) -> SimpleNamespace:
    """Train, evaluate and promote one candidate, like the DAG does."""
    training = steps.train(config, _tracking(), cutoff, cycle_id, **train_options)
    evaluation = steps.evaluate(config, _tracking(), training.run_id)
    decision = steps.promote(config, _tracking(), training.run_id, evaluation)
    # The JSON forms, as the DAG's tasks hand them on through XCom.
    return SimpleNamespace(
        training=training.to_json(), evaluation=evaluation.to_json(), decision=decision.to_json()
    )


@pytest.fixture(scope="module")
def lifecycle(
    module_mlflow: str, synth: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
) -> SimpleNamespace:
    """A first model (promoted), a candidate trained on 20 rows (rejected) and a dry run, on 3 weeks."""
    project = synth.make_project(tmp_path_factory.mktemp("lifecycle"), "lifecycle")
    ids = project.land_and_accept(range(3))
    cutoff = synth.cutoff_after(2)
    first = _cycle(project.config, cutoff, "cycle-1", trigger="schedule")
    tiny = _cycle(project.config, cutoff, "cycle-2", max_train_rows=20)
    dry_training = steps.train(project.config, _tracking(), cutoff, "cycle-3")
    dry_evaluation = steps.evaluate(project.config, _tracking(), dry_training.run_id)
    dry_decision = steps.promote(project.config, _tracking(), dry_training.run_id, dry_evaluation, dry_run=True)
    dry = SimpleNamespace(
        training=dry_training.to_json(), evaluation=dry_evaluation.to_json(), decision=dry_decision.to_json()
    )
    return SimpleNamespace(
        project=project, config=project.config, ids=ids, cutoff=cutoff, first=first, tiny=tiny, dry=dry
    )


# -- the promotion lifecycle --------------------------------------------------------------------------------
def test_first_model_is_promoted_and_gets_the_champion_alias(lifecycle: SimpleNamespace) -> None:
    decision = lifecycle.first.decision
    assert decision["verdict"] == "promoted" and decision["version"] == "1"
    assert lifecycle.first.evaluation["champion"] is None
    champion = _client().get_model_version_by_alias("lifecycle", "champion")
    assert champion.run_id == lifecycle.first.training["run_id"]
    tags = _version_tags("lifecycle", "1")
    assert tags[f"{TAG}decision"] == "promoted"
    assert tags[f"{TAG}previous_champion"] == "none"
    assert tags[f"{TAG}run_id"] == lifecycle.first.training["run_id"]


def test_a_fresh_tracking_store_has_no_champion(mlflow_tracking: str, lifecycle: SimpleNamespace) -> None:
    assert Tracking.from_env().uri == mlflow_tracking
    client = Tracking(mlflow_tracking).client()
    assert steps.champion_version(client, lifecycle.config) is None  # the module's store is not visible here


def test_candidate_trained_on_a_tiny_sample_is_rejected_and_tagged_with_the_reason(
    lifecycle: SimpleNamespace,
) -> None:
    assert lifecycle.tiny.training["train_rows"] == 20
    decision = lifecycle.tiny.decision
    assert decision["verdict"] == "rejected" and decision["version"] == "2"
    tags = _version_tags("lifecycle", "2")
    assert tags[f"{TAG}decision"] == "rejected"
    assert "does not clear the required" in tags[f"{TAG}reason"]
    assert tags[f"{TAG}previous_champion"] == "1"
    assert tags[f"{TAG}champion_rmse"] != "none"


def test_rejected_candidate_leaves_the_champion_unchanged(lifecycle: SimpleNamespace) -> None:
    assert _champion("lifecycle") == "1"


def test_candidate_and_champion_are_scored_on_the_same_held_out_rows(lifecycle: SimpleNamespace) -> None:
    first, tiny = lifecycle.first, lifecycle.tiny
    assert tiny.evaluation["champion_version"] == "1"
    assert tiny.evaluation["holdout_rows"] == first.evaluation["holdout_rows"] == first.training["holdout_rows"]
    assert tiny.training["holdout_start"] == first.training["holdout_start"]
    # The champion's score now is its score as a candidate then: same rows, same model.
    assert tiny.evaluation["champion"] == pytest.approx(first.evaluation["candidate"])
    assert tiny.evaluation["candidate"] > tiny.evaluation["champion"]  # rmse: the tiny sample is worse
    # The paired bootstrap of those rows: the difference, with an interval that excludes zero here.
    rmse = tiny.evaluation["comparisons"]["rmse"]
    assert rmse["difference"] == pytest.approx(tiny.evaluation["candidate"] - tiny.evaluation["champion"])
    assert 0 < rmse["difference_low"] <= rmse["difference"] <= rmse["difference_high"]
    assert rmse["units"] == tiny.evaluation["holdout_rows"] and rmse["resamples"] == 1000
    assert first.evaluation["comparisons"] == {}  # a first model has nothing to be compared with
    decision = tiny.decision
    assert decision["comparison"] == rmse and "[95% CI" in decision["reason"]


def test_evaluation_is_logged_on_the_candidate_run(lifecycle: SimpleNamespace) -> None:
    run = _client().get_run(lifecycle.tiny.training["run_id"])
    assert run.data.metrics["holdout_rmse"] == pytest.approx(lifecycle.tiny.evaluation["candidate"])
    assert run.data.metrics["champion_holdout_rmse"] == pytest.approx(lifecycle.tiny.evaluation["champion"])
    assert run.data.tags[f"{TAG}champion_version"] == "1"


def test_decision_is_logged_on_the_run_as_tags_and_artifact(lifecycle: SimpleNamespace) -> None:
    import mlflow

    run_id = lifecycle.tiny.training["run_id"]
    run = _client().get_run(run_id)
    assert run.data.tags[f"{TAG}decision"] == "rejected"
    assert run.data.tags[f"{TAG}version"] == "2"
    record = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/decision/decision.json")
    assert record["verdict"] == "rejected" and record["run_id"] == run_id and record["cycle_id"] == "cycle-2"


def test_every_candidate_gets_a_model_card_logged_and_linked_from_its_version(lifecycle: SimpleNamespace) -> None:
    import mlflow

    for cycle, version, verdict in ((lifecycle.first, "1", "promoted"), (lifecycle.tiny, "2", "rejected")):
        run = _client().get_run(cycle.training["run_id"])
        card = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model_card/model_card.md")
        assert card.startswith(f"# Model card: lifecycle v{version}\n")
        assert f"**Decision: {verdict}.** {cycle.decision['reason']}" in card
        for batch_id in lifecycle.ids:  # the window, with its hashes and validation status
            assert f"| {batch_id} | 200 | `" in card
        assert "| accepted |" in card and "code version `test-code-version`" in card.lower()
        html = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model_card/model_card.html")
        assert "<table>" in html and f"<h1>Model card: lifecycle v{version}</h1>" in html
        tags = _version_tags("lifecycle", version)
        assert tags[f"{TAG}model_card"] == f"{run.info.artifact_uri}/model_card/model_card.html"
    rejected = _client().get_run(lifecycle.tiny.training["run_id"])
    card = mlflow.artifacts.load_text(f"{rejected.info.artifact_uri}/model_card/model_card.md")
    assert "| rmse (primary) |" in card and "Breaks " in card and "of rows [95% CI" in card
    artifacts = {a.path for a in _client().list_artifacts(rejected.info.run_id, "model_card")}
    assert "model_card/differences.png" in artifacts  # compared with a champion: the plot of the difference


def test_a_promoted_candidate_passed_the_serving_check_loaded_as_a_consumer_loads_it(
    lifecycle: SimpleNamespace,
) -> None:
    import mlflow

    serving = lifecycle.first.decision["serving"]
    assert serving["passed"] and serving["champion"] is None and serving["batch_id"] == lifecycle.ids[-1]
    figures = serving["candidate"]
    assert figures["model_uri"] == "models:/lifecycle/1" and figures["rows"] == 200 and figures["problem"] is None
    assert figures["p95_ms_per_1k_rows"] > 0 and figures["load_s"] > 0
    tags = _version_tags("lifecycle", "1")
    assert tags[f"{TAG}serving"] == "passed" and float(tags[f"{TAG}serving_p95_ms_per_1k_rows"]) > 0
    run = _client().get_run(lifecycle.first.training["run_id"])
    card = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model_card/model_card.md")
    assert (
        "## Serving check\n\nserving check passed: p95 " in card and "| candidate `models:/lifecycle/1` |" in card
    )
    assert lifecycle.tiny.decision["serving"] is None  # the gate rejected it: nothing to serve


def test_a_candidate_over_the_serving_budget_is_rejected_naming_the_figure_and_stays_registered(
    synth: SimpleNamespace, tmp_path: Path
) -> None:
    project = synth.make_project(
        tmp_path, "slow_serving", promotion={"serving": {"max_p95_ms_per_1k_rows": 0.000001}}
    )
    project.land_and_accept(range(2))
    cycle = _cycle(project.config, synth.cutoff_after(1), "cycle-1")
    decision = cycle.decision
    assert decision["verdict"] == "rejected" and decision["version"] == "1"
    assert re.match(
        r"serving check failed: p95 [\d.]+ ms per 1,000 rows exceeds the budget 1e-06; the gate had said: first",
        decision["reason"],
    ), decision["reason"]
    assert not _client().get_registered_model("slow_serving").aliases
    tags = _version_tags("slow_serving", "1")
    assert tags[f"{TAG}decision"] == "rejected" and tags[f"{TAG}serving"] == "failed"


def test_a_model_that_cannot_be_loaded_fails_the_serving_check(
    lifecycle: SimpleNamespace,
) -> None:
    check = steps.serving_check(
        lifecycle.config, _tracking(), lifecycle.first.training["run_id"], "models:/lifecycle/99"
    )
    assert not check.passed and check.reason.startswith("serving check failed: cannot load: ")


@pytest.mark.parametrize("mode", ["dry_run", "disabled"])
def test_a_project_in_dry_run_or_disabled_mode_decides_but_registers_and_promotes_nothing(
    mode: str, synth: SimpleNamespace, tmp_path: Path
) -> None:
    name = f"mode_{mode}"
    project = synth.make_project(tmp_path, name, promotion={"mode": mode})
    project.land_and_accept(range(2))
    decision = _cycle(project.config, synth.cutoff_after(1), "cycle-1").decision
    assert decision["version"] is None
    if mode == "dry_run":  # the whole decision, the serving check of the run's model included, recorded
        assert decision["dry_run"] and decision["verdict"] == "promoted" and decision["serving"]["passed"]
        assert decision["reason"].startswith("first model: ")
    else:
        assert not decision["dry_run"] and decision["verdict"] == "rejected" and decision["serving"] is None
        assert decision["reason"].startswith(
            "promotion is disabled (promotion.mode: disabled); the gate would have said: first model: "
        )
    assert _client().search_model_versions(f"name='{name}'") == []
    recorded = _client().get_run(decision["run_id"]).data.tags
    assert recorded[f"{TAG}decision"] == ("dry_run:promoted" if mode == "dry_run" else "rejected")


def test_dry_run_registers_nothing(lifecycle: SimpleNamespace) -> None:
    decision = lifecycle.dry.decision
    assert decision["dry_run"] is True and decision["version"] is None
    versions = _client().search_model_versions("name='lifecycle'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert _champion("lifecycle") == "1"
    run = _client().get_run(lifecycle.dry.training["run_id"])
    assert run.data.tags[f"{TAG}decision"] == f"dry_run:{decision['verdict']}"
    assert run.data.tags[f"{TAG}version"] == "none"


def test_candidate_run_is_tagged_with_window_code_version_and_trigger(lifecycle: SimpleNamespace) -> None:
    training = lifecycle.first.training
    assert training["window"] == lifecycle.ids
    tags = _client().get_run(training["run_id"]).data.tags
    assert json.loads(tags[f"{TAG}window"]) == lifecycle.ids
    assert tags[f"{TAG}code_version"] == "test-code-version"  # RETRAINER_CODE_VERSION, set by the fixture
    assert tags[f"{TAG}trigger"] == "schedule"
    assert tags[f"{TAG}kind"] == "candidate" and tags[f"{TAG}cycle_id"] == "cycle-1"
    assert tags[f"{TAG}holdout_start"] == training["holdout_start"]
    assert tags[f"{TAG}model_uri"] == training["model_uri"]
    assert tags[f"{TAG}trained_on"] == "cpu"


def test_candidate_run_logs_params_and_training_metrics(lifecycle: SimpleNamespace) -> None:
    run = _client().get_run(lifecycle.tiny.training["run_id"])
    assert run.data.params["estimator"] == "sklearn.linear_model.Ridge"
    assert run.data.params["seed"] == "7"
    assert run.data.params["train_rows"] == "20" and run.data.params["max_train_rows"] == "20"
    assert {"train_rmse", "train_mae", "train_r2"} <= set(run.data.metrics)


def test_candidate_run_logs_the_training_batches_with_their_hashes(lifecycle: SimpleNamespace) -> None:
    import mlflow

    run = _client().get_run(lifecycle.first.training["run_id"])
    logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/data/training_batches.json")
    catalog = lifecycle.project.catalog
    assert [b["batch_id"] for b in logged["batches"]] == lifecycle.ids
    for batch in logged["batches"]:
        record = catalog.get(batch["batch_id"])
        assert batch["sha256"] == record.sha256 == storage.sha256_bytes(storage.read_bytes(record.uri))
        assert batch["rows"] == 200 and batch["uri"] == record.uri


def test_candidate_run_logs_the_project_config(lifecycle: SimpleNamespace, tmp_path: Path) -> None:
    import mlflow

    run = _client().get_run(lifecycle.first.training["run_id"])
    logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config/project.json")
    assert logged["name"] == "lifecycle" and logged["estimator"]["class"] == "sklearn.linear_model.Ridge"
    assert parse_config(logged, tmp_path) == lifecycle.config  # the logged config is the whole config


def test_logged_model_has_a_signature_and_pins_scikit_learn(lifecycle: SimpleNamespace) -> None:
    from importlib.metadata import version

    import mlflow

    model_uri = lifecycle.first.training["model_uri"]
    signature = mlflow.models.get_model_info(model_uri).signature
    assert signature is not None
    assert sorted(signature.inputs.input_names()) == ["region", "x1", "x2"]
    requirements = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text().split()
    assert f"scikit-learn=={version('scikit-learn')}" in requirements


def test_champion_loads_from_the_registry_and_predicts(lifecycle: SimpleNamespace, synth: SimpleNamespace) -> None:
    import numpy as np

    from retrainer import modeling

    with _tracking().active():
        model = steps.load_model(_client(), lifecycle.config, "models:/lifecycle@champion")
    features, _ = modeling.prepare(synth.week(5, 30), lifecycle.config)
    assert np.isfinite(model.predict(features)).all()


def test_rollback_of_a_first_champion_raises(lifecycle: SimpleNamespace) -> None:
    with pytest.raises(RuntimeError, match="replaced no earlier champion"):
        steps.rollback(lifecycle.config, _tracking())
    assert _champion("lifecycle") == "1"


def test_record_cycle_and_cycle_table(lifecycle: SimpleNamespace) -> None:
    config, first, dry = lifecycle.config, lifecycle.first, lifecycle.dry
    cutoff = lifecycle.cutoff.isoformat()
    ingested = {"registered": lifecycle.ids, "quarantined": [], "pending": lifecycle.ids, "champion_version": None}
    steps.record_cycle(
        config,
        "cycle-1",
        steps.CycleParts.model_validate(
            {
                "ingest": ingested,
                "training": first.training,
                "evaluation": first.evaluation,
                "decision": first.decision,
            }
        ),
        trigger="schedule",
        cutoff=cutoff,
    )
    nothing = {"registered": [], "quarantined": [], "pending": ["not-a-batch"], "champion_version": None}
    stopped = steps.record_cycle(
        config,
        "cycle-2",
        steps.CycleParts.model_validate({"ingest": nothing}),
        trigger="schedule",
        cutoff="2099-01-01T03:00:00+00:00",
        error="no new accepted batch in this cycle (use force to retrain anyway)",
    )
    dry_parts = steps.CycleParts.model_validate({"evaluation": dry.evaluation, "decision": dry.decision})
    steps.record_cycle(config, "cycle/3 dry", dry_parts, trigger="manual", cutoff=cutoff)

    assert stopped.batches == {"not-a-batch": "unknown"}
    files = storage.list_files(storage.join(lifecycle.project.catalog.reports, "cycles"), "*.json")
    assert [storage.basename(f) for f in files] == ["cycle-1.json", "cycle-2.json", "cycle_3_dry.json"]
    rows = {row.cycle: row for row in steps.cycle_table(config)}
    assert [row.cycle for row in steps.cycle_table(config)] == ["cycle-1", "cycle/3 dry", "cycle-2"]
    assert rows["cycle-1"].week == ", ".join(lifecycle.ids)
    assert rows["cycle-1"].validation == "accepted"
    assert rows["cycle-1"].decision == "promoted v1"
    assert rows["cycle-1"].candidate == pytest.approx(first.evaluation["candidate"])
    assert rows["cycle-1"].champion is None
    assert rows["cycle-2"].decision == "no retrain: no new accepted batch"
    assert rows["cycle-2"].validation == "unknown"
    assert rows["cycle/3 dry"].decision == f"dry run: {dry.decision['verdict']}"
    assert rows["cycle/3 dry"].week == "-"
    json.dumps([row.model_dump(mode="json") for row in steps.cycle_table(config)], allow_nan=False)
    # A drift-alert run validated nothing itself: its row names the alert's batches and drift share.
    alert = {
        "via": "drift-monitor",
        "summary": "data_drift alert",
        "kind": "data_drift",
        "batch_ids": [lifecycle.ids[-1]],
        "drift": {"share_drifted": 0.64},
    }
    empty = {"registered": [], "quarantined": [], "pending": [], "champion_version": "1"}
    steps.record_cycle(
        config,
        "alert-1",
        steps.CycleParts.model_validate(
            {"ingest": empty, "evaluation": first.evaluation, "decision": first.decision}
        ),
        trigger="drift_alert",
        cutoff="2099-01-02T00:00:00+00:00",
        alerts=[alert],
    )
    row = steps.cycle_table(config)[-1]
    assert (row.trigger, row.week, row.validation) == ("drift_alert", lifecycle.ids[-1], "accepted")
    assert row.drift_share == 0.64
    # A rerun of a cycle is its next attempt: the earlier record (here a promotion) stays, beside it.
    rerun = steps.record_cycle(
        config,
        "cycle-1",
        steps.CycleParts.model_validate({"ingest": nothing}),
        trigger="schedule",
        cutoff=cutoff,
        error="no new accepted batch in this cycle (use force to retrain anyway)",
    )
    assert rerun.attempt == 2
    files = storage.list_files(storage.join(lifecycle.project.catalog.reports, "cycles"), "cycle-1*.json")
    assert [storage.basename(f) for f in files] == ["cycle-1.attempt1.json", "cycle-1.json"]
    rows = {row.cycle: row for row in steps.cycle_table(config)}
    assert rows["cycle-1"].decision == "promoted v1"
    assert rows["cycle-1 (attempt 2)"].decision == "no retrain: no new accepted batch"


# -- races and rollbacks ------------------------------------------------------------------------------------
def test_a_promotion_that_lost_the_race_is_recorded_as_superseded_and_registers_nothing(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project("moved", promotion=NO_SERVING)
    project.land_and_accept(range(2))
    cutoff = synth.cutoff_after(1)
    a = steps.train(project.config, _tracking(), cutoff, "a")
    b = steps.train(project.config, _tracking(), cutoff, "b", max_train_rows=60)
    evaluation_a = steps.evaluate(project.config, _tracking(), a.run_id)
    evaluation_b = steps.evaluate(project.config, _tracking(), b.run_id)  # also sees no champion
    steps.promote(project.config, _tracking(), a.run_id, evaluation_a)
    lost = steps.promote(project.config, _tracking(), b.run_id, evaluation_b)
    assert lost.verdict == "rejected" and lost.version is None and not lost.promoted and lost.superseded
    record = steps.CycleRecord(cycle_id="b", recorded_at=lost.decided_at, decision=lost)
    assert record.outcome == "superseded" and record.outcome_kind == "rejected"
    assert lost.reason.startswith("superseded: the champion moved from vNone to v1 (promotion by promote of run ")
    assert "after this candidate was compared with vNone; the gate had said: first model" in lost.reason
    assert _client().get_run(b.run_id).data.tags[f"{TAG}decision"] == "rejected"
    assert [str(v.version) for v in _client().search_model_versions("name='moved'")] == ["1"]
    assert _champion("moved") == "1"
    [move] = steps.alias_history(project.config, _tracking())
    assert (move.from_version, move.to_version, move.run_id, move.action) == (None, "1", a.run_id, "promotion")


def test_rollback_moves_the_champion_back_and_tags_both_versions(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project("rollback", promotion=NO_SERVING)
    project.land_and_accept(range(2))
    cutoff = synth.cutoff_after(1)
    weak = _cycle(project.config, cutoff, "weak", max_train_rows=20)
    strong = _cycle(project.config, cutoff, "strong")
    assert weak.decision["verdict"] == strong.decision["verdict"] == "promoted"
    assert _champion("rollback") == "2"

    result = steps.rollback(project.config, _tracking(), reason="bad predictions in production", by="on-call")

    assert result.model_dump(exclude={"at", "record_uri"}) == {
        "model": "rollback",
        "from_version": "2",
        "to_version": "1",
        "reason": "bad predictions in production",
        "by": "on-call",
    }
    assert storage.exists(result.record_uri) and result.at is not None
    assert _champion("rollback") == "1"
    rolled_back, restored = _version_tags("rollback", "2"), _version_tags("rollback", "1")
    assert rolled_back[f"{TAG}rollback_reason"] == "bad predictions in production"
    assert rolled_back[f"{TAG}rolled_back_at"] == result.at.isoformat()
    assert rolled_back[f"{TAG}rolled_back_to"] == "1"
    assert restored[f"{TAG}restored_at"] == rolled_back[f"{TAG}rolled_back_at"]
    assert restored[f"{TAG}decision"] == "promoted"  # its original decision is kept
    # The registry's version list says it in words: no longer "promoted" alone.
    described = _client().get_model_version("rollback", "2").description
    assert described.startswith(f"rolled back on {result.at.isoformat()} (v1 is champion again): bad predictions")
    assert described.endswith(" | before: promoted: " + strong.decision["reason"])
    assert _client().get_model_version("rollback", "1").description.startswith("champion again since ")
    # retrainer report has a row for it (these cycles ran without a cycle record).
    rows = steps.cycle_table(project.config)
    assert [row.decision for row in rows] == ["rolled_back"]
    assert rows[-1].reason == "v2 -> v1: bad predictions in production" and rows[-1].trigger == "on-call"
    with pytest.raises(RuntimeError, match="replaced no earlier champion"):
        steps.rollback(project.config, _tracking())  # v1 was the first champion
    steps.rollback(project.config, _tracking(), to_version="2", reason="false alarm")
    assert _champion("rollback") == "2"
    # A second rollback keeps the gate's words once, not every earlier rollback's.
    described = _client().get_model_version("rollback", "2").description
    assert described.startswith("champion again since ") and described.count(" | before: ") == 1
    assert [row.reason for row in steps.cycle_table(project.config)][-2:] == [
        "v2 -> v1: bad predictions in production",
        "v1 -> v2: false alarm",
    ]

    moves = steps.alias_history(project.config, _tracking())
    assert [(m.sequence, m.action, m.from_version, m.to_version) for m in moves] == [
        (1, "promotion", None, "1"),
        (2, "promotion", "1", "2"),
        (3, "rollback", "2", "1"),
        (4, "rollback", "1", "2"),
    ]
    assert moves[1].run_id == strong.training["run_id"] and "clears the required" in moves[1].reason
    assert (moves[2].by, moves[2].reason) == ("on-call", "bad predictions in production")
    assert moves[3].by.startswith("rollback on ")  # this process, by default


def test_rollback_without_any_champion_raises(synthetic_project: Callable[..., Any]) -> None:
    project = synthetic_project("never_trained")
    assert steps.champion_version(_client(), project.config) is None
    with pytest.raises(RuntimeError, match="never_trained has no champion to roll back"):
        steps.rollback(project.config, _tracking())


# -- train preconditions ------------------------------------------------------------------------------------
def test_train_with_no_new_data_raises_nothing_to_train(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project()
    project.land_and_accept(range(2))
    with pytest.raises(steps.NothingToTrainError, match="no new accepted batch"):
        steps.train(project.config, _tracking(), synth.cutoff_after(1), "c", require_new_data=[])


def test_train_without_accepted_batches_raises_catalog_error(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project()
    project.land(range(2))  # landed, never validated
    project.catalog.register_new()
    with pytest.raises(CatalogError, match="no accepted batch ended by"):
        steps.train(project.config, _tracking(), synth.cutoff_after(1), "c")


def test_train_uses_only_the_requested_window(lifecycle: SimpleNamespace) -> None:
    training = steps.train(lifecycle.config, _tracking(), lifecycle.cutoff, "window-1", window_batches=1)
    assert training.window == lifecycle.ids[-1:]
    assert training.train_rows + training.holdout_rows == 200


def test_ingest_registers_new_batches_and_lists_pending_ones(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project()
    ids = project.land(range(3), rows=30)
    storage.write_bytes(storage.join(project.catalog.landing, "broken.parquet"), b"not parquet")
    result = steps.ingest(project.config, _tracking(), synth.cutoff_after(1).isoformat())
    assert sorted(result.registered) == sorted([*ids, "broken"])
    assert result.quarantined == ["broken"]
    assert result.pending == ids[:2]
    assert project.catalog.get("broken").status is BatchStatus.QUARANTINED
    assert steps.ingest(project.config, _tracking(), synth.cutoff_after(2)).registered == []


# -- the platform is generic: a classifier through the same steps -------------------------------------------
def test_classifier_project_runs_through_train_evaluate_promote(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project("churn", task="binary_classification", floor=0.7)
    project.land_and_accept(range(2))
    cycle = _cycle(project.config, synth.cutoff_after(1), "c1")
    assert cycle.evaluation["metric"] == "roc_auc"
    assert cycle.evaluation["candidate"] > 0.8
    assert set(cycle.evaluation["candidate_metrics"]) == {"roc_auc", "log_loss", "accuracy", "f1"}
    assert cycle.decision["verdict"] == "promoted" and "meets the floor" in cycle.decision["reason"]
    assert _champion("churn") == "1"


def test_xgboost_project_trains_promotes_and_its_model_loads_back(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    import numpy as np

    from retrainer import modeling

    project = synthetic_project("boosted", estimator="xgboost")
    project.land_and_accept(range(2))
    cycle = _cycle(project.config, synth.cutoff_after(1), "c1")
    assert cycle.decision["verdict"] == "promoted"
    run = _client().get_run(cycle.training["run_id"])
    assert run.data.params["estimator"] == "xgboost.XGBRegressor"
    with _tracking().active():
        model = steps.load_model(_client(), project.config, "models:/boosted@champion")
    features, target = modeling.prepare(synth.week(2, 50), project.config)
    metrics = modeling.compute_metrics(target, model.predict(features), project.config.task)
    assert np.isfinite(metrics["rmse"]) and metrics["r2"] > 0.8


def test_evaluate_explains_a_primary_metric_that_cannot_be_computed(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    from retrainer.modeling import ModelingError

    project = synthetic_project("one_class", task="binary_classification")
    catalog = project.catalog
    for week in range(3):
        frame = synth.week(week, 200, task="binary_classification")
        if week == 2:
            frame["label"] = 0  # the newest week, hence the whole holdout, has a single class
        catalog.land(synth.batch_id(week), frame)
        catalog.register_new()
        catalog.accept(synth.batch_id(week), {"success": True})
    training = steps.train(project.config, _tracking(), synth.cutoff_after(2), "c1")
    with pytest.raises(ModelingError, match="roc_auc"):
        steps.evaluate(project.config, _tracking(), training.run_id)


# -- helpers ------------------------------------------------------------------------------------------------
def test_parse_cutoff_makes_aware_utc_datetimes() -> None:
    assert steps.parse_cutoff("2024-01-08T03:00:00Z").isoformat() == "2024-01-08T03:00:00+00:00"
    assert steps.parse_cutoff("2024-01-08T03:00:00").utcoffset().total_seconds() == 0
    assert steps.parse_cutoff(None).tzinfo is not None


def test_safe_id_keeps_ids_usable_as_file_names() -> None:
    assert steps.safe_id("scheduled__2024-01-08T03:00:00+00:00") == "scheduled__2024-01-08T03_00_00_00_00"
    assert steps.safe_id("/a b/") == "a_b"


def test_code_version_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAINER_CODE_VERSION", "v1.2.3")
    assert steps.code_version() == "v1.2.3"
    monkeypatch.delenv("RETRAINER_CODE_VERSION")
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?|\d+\.\d+\.\d+.*", steps.code_version())


# -- CLI ----------------------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _invoke(*args: str) -> Any:
    from typer.testing import CliRunner

    from retrainer.cli import app

    return CliRunner().invoke(app, list(args))


def _plain(text: str) -> str:
    return " ".join(_ANSI.sub("", text).split())


def test_cli_check_config_prints_the_resolved_config_as_json(synthetic_project: Callable[..., Any]) -> None:
    project = synthetic_project()
    result = _invoke("check-config", "--config", str(project.path))
    assert result.exit_code == 0, result.output
    resolved = json.loads(_ANSI.sub("", result.stdout))
    assert resolved["name"] == "synthetic_sales"
    assert resolved["data"]["root_uri"] == project.config.data.root_uri
    assert resolved["estimator"]["class"] == "sklearn.linear_model.Ridge"


def test_cli_check_config_rejects_an_invalid_config_naming_the_field(
    synth: SimpleNamespace, tmp_path: Path
) -> None:
    import yaml

    document = synth.config_dict()
    document["metric"]["name"] = "mape"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    result = _invoke("check-config", "--config", str(path))
    assert result.exit_code == 1
    message = _plain(result.stderr)
    assert message.startswith("error:")
    assert "metric.name" in message and "unknown metric 'mape'" in message
    assert result.stdout == ""


def test_cli_check_config_reports_a_missing_file(tmp_path: Path) -> None:
    result = _invoke("check-config", "--config", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1
    assert "does not exist" in _plain(result.stderr)


def test_cli_report_on_an_empty_project(synthetic_project: Callable[..., Any]) -> None:
    project = synthetic_project()
    result = _invoke("report", "--config", str(project.path))
    assert result.exit_code == 0, result.output
    assert "Retraining cycles of synthetic_sales" in _plain(result.stdout)
    as_json = _invoke("report", "--config", str(project.path), "--json")
    assert as_json.exit_code == 0
    assert json.loads(_ANSI.sub("", as_json.stdout)) == []


def test_cli_serving_check_measures_the_registered_version_beside_the_champion(lifecycle: SimpleNamespace) -> None:
    run_id = lifecycle.tiny.training["run_id"]  # v2, rejected by the gate: the check can still be asked for
    result = _invoke("serving-check", "--config", str(lifecycle.project.path), "--run-id", run_id)
    assert result.exit_code == 0, result.output
    check = json.loads(_ANSI.sub("", result.stdout))
    assert check["candidate"]["model_uri"] == "models:/lifecycle/2" and check["candidate"]["problem"] is None
    assert check["champion"]["model_uri"] == f"models:/lifecycle/{_champion('lifecycle')}"
    assert check["reason"].startswith("serving check passed: p95 ") and "(champion: p95 " in check["reason"]


def test_cli_report_lists_recorded_cycles(lifecycle: SimpleNamespace) -> None:
    parts = steps.CycleParts.model_validate(
        {"evaluation": lifecycle.tiny.evaluation, "decision": lifecycle.tiny.decision}
    )
    steps.record_cycle(lifecycle.config, "cli-cycle", parts, trigger="manual", cutoff="2100-01-01T00:00:00+00:00")
    result = _invoke("report", "--config", str(lifecycle.project.path), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(_ANSI.sub("", result.stdout))
    assert rows[-1]["cycle"] == "cli-cycle" and rows[-1]["decision"] == "rejected v2"


def test_cli_train_without_accepted_data_fails_with_one_line(synthetic_project: Callable[..., Any]) -> None:
    project = synthetic_project()
    result = _invoke("train", "--config", str(project.path), "--cutoff", "2024-03-01T00:00:00Z")
    assert result.exit_code == 1
    assert "no accepted batch ended by" in _plain(result.stderr)


# -- fixes from review: late labels, changed files, unfair comparisons, signatures ------------------------------
def test_unlabelled_newest_rows_are_neither_trained_on_nor_held_out(
    synth: SimpleNamespace, tmp_path: Path
) -> None:
    project = synth.make_project(tmp_path / "late", "late_labels")
    project.land_and_accept([0])
    late = synth.week(1, 200)
    late["y"] = None  # labels for the newest week have not arrived yet
    project.catalog.land(synth.batch_id(1), late)
    project.catalog.register_new()
    project.catalog.accept(synth.batch_id(1), {"success": True})
    result = steps.train(project.config, _tracking(), synth.cutoff_after(1), "late")
    evaluation = steps.evaluate(project.config, _tracking(), result.run_id)
    assert result.train_rows + result.holdout_rows == 200
    assert evaluation.holdout_rows == result.holdout_rows


def test_a_batch_changed_after_landing_is_quarantined_not_stuck(synth: SimpleNamespace, tmp_path: Path) -> None:
    project = synth.make_project(tmp_path / "tamper", "tamper")
    [batch] = project.land([0])
    project.catalog.register_new()
    landed = project.catalog.get(batch).uri
    Path(landed).write_bytes(storage.parquet_bytes(synth.week(0, 50)))  # rewritten in place upstream
    with pytest.raises(steps.BatchRejectedError, match="changed since it landed"):
        steps.validate(project.config, [batch])
    record = project.catalog.get(batch)
    assert record.status is BatchStatus.QUARANTINED
    report = json.loads(storage.read_bytes(storage.join(project.catalog.quarantine, batch, "validation.json")))
    assert report["content_changed_since_landing"] is True
    assert steps.ingest(project.config, _tracking(), synth.cutoff_after(0)).pending == []  # not blocked


def test_an_unreadable_file_on_arrival_stops_the_cycle(synth: SimpleNamespace, tmp_path: Path) -> None:
    project = synth.make_project(tmp_path / "garbage", "garbage")
    project.land([0])
    storage.write_bytes(storage.join(project.catalog.landing, "broken.parquet"), b"not parquet")
    ingested = steps.ingest(project.config, _tracking(), synth.cutoff_after(0))
    assert ingested.quarantined == ["broken"]
    with pytest.raises(steps.BatchRejectedError, match="broken") as rejected:
        steps.validate(project.config, [], quarantined_on_arrival=ingested.quarantined)
    assert rejected.value.batch_ids == ["broken"]


def test_evaluate_refuses_a_champion_trained_on_the_holdout(synth: SimpleNamespace, tmp_path: Path) -> None:
    project = synth.make_project(tmp_path / "backfill", "backfill")
    project.land_and_accept(range(3))
    _cycle(project.config, synth.cutoff_after(2), "newest-first")  # the champion saw weeks 0-2
    old = steps.train(project.config, _tracking(), synth.cutoff_after(1), "backfill-of-week-1")
    with pytest.raises(ValueError, match="would not be fair"):
        steps.evaluate(project.config, _tracking(), old.run_id)


def test_evaluate_refuses_a_run_that_is_not_a_candidate(lifecycle: SimpleNamespace) -> None:
    import mlflow

    with _tracking().active(), mlflow.start_run() as other:
        pass
    with pytest.raises(ValueError, match="not a candidate run"):
        steps.evaluate(lifecycle.project.config, _tracking(), other.info.run_id)


def test_signature_comes_from_the_schema_and_requirements_load_the_model(lifecycle: SimpleNamespace) -> None:
    from mlflow.models import get_model_info

    info = get_model_info(lifecycle.first.training["model_uri"])
    inputs = {c["name"]: c["type"] for c in info.signature.inputs.to_dict()}
    assert inputs == {"x1": "double", "x2": "double", "region": "string"}
    from mlflow.pyfunc import get_model_dependencies

    requirements = Path(get_model_dependencies(lifecycle.first.training["model_uri"])).read_text()
    for package in ("scikit-learn==", "skops==", "pandas=="):
        assert package in requirements


def test_promote_waits_for_the_projects_alias_lease_and_registers_nothing_without_it(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    from retrainer import locks
    from retrainer.steps.registry import champion_lock

    project = synthetic_project("leased")
    project.land_and_accept(range(2))
    training = steps.train(project.config, _tracking(), synth.cutoff_after(1), "c")
    evaluation = steps.evaluate(project.config, _tracking(), training.run_id)
    with (
        locks.held(champion_lock(project.config), "a rollback by the on-call"),
        pytest.raises(locks.LockTimeout, match="held by a rollback by the on-call"),
    ):
        steps.promote(project.config, _tracking(), training.run_id, evaluation, lock_wait_s=0.5)
    assert _client().search_model_versions("name='leased'") == []
    assert steps.promote(project.config, _tracking(), training.run_id, evaluation).version == "1"


def test_grouped_rows_are_resampled_together_in_the_comparison(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project("grouped")
    project.land_and_accept(range(2))
    config = project.config
    config = config.model_copy(update={"promotion": config.promotion.model_copy(update={"group_by": "region"})})
    _cycle(config, synth.cutoff_after(1), "first")
    training = steps.train(config, _tracking(), synth.cutoff_after(1), "second", max_train_rows=50)
    comparison = steps.evaluate(config, _tracking(), training.run_id).comparisons["rmse"]
    assert comparison.unit == "region" and comparison.units == 4  # north, south, east, west


def test_cli_history_lists_every_alias_move_and_says_which_version_served_when(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    from datetime import UTC, datetime, timedelta

    project = synthetic_project("history", promotion=NO_SERVING)
    project.land_and_accept(range(2))
    cutoff = synth.cutoff_after(1)
    before = datetime.now(UTC) - timedelta(seconds=1)
    _cycle(project.config, cutoff, "weak", max_train_rows=20)
    _cycle(project.config, cutoff, "strong")
    result = _invoke("rollback", "--config", str(project.path), "--reason", "pager at 3am", "--by", "alice")
    assert result.exit_code == 0, result.output

    table = _invoke("history", "--config", str(project.path))
    assert table.exit_code == 0, table.output
    assert "Alias history of history" in table.output
    for text in ("promotion", "rollback", "alice", "pager at 3am", "v2"):
        assert text in table.output
    moves = json.loads(_invoke("history", "--config", str(project.path), "--json").output)
    assert [(m["from_version"], m["to_version"]) for m in moves] == [(None, "1"), ("1", "2"), ("2", "1")]
    assert json.loads(
        _invoke("history", "-c", str(project.path), "--at", before.isoformat(), "--json").output
    ) == {"model": "history", "at": before.isoformat(), "champion": None}
    now = _invoke("history", "-c", str(project.path), "--at", datetime.now(UTC).isoformat())
    assert "history v1 was the champion at" in now.output
    bad = _invoke("history", "-c", str(project.path), "--at", "last tuesday")
    assert bad.exit_code == 1 and "last tuesday" in bad.output


def test_serving_at_follows_the_moves_of_one_alias() -> None:
    from datetime import UTC, datetime

    from retrainer.history import AliasMove, serving_at

    def move(sequence: int, day: int, to: str, alias: str = "champion") -> AliasMove:
        return AliasMove(
            sequence=sequence,
            at=datetime(2026, 1, day, tzinfo=UTC),
            alias=alias,
            from_version=None,
            to_version=to,
            action="promotion",
            by="test",
            reason="r",
        )

    moves = [move(1, 2, "1"), move(2, 5, "3", alias="challenger"), move(3, 9, "2")]
    assert serving_at(moves, datetime(2026, 1, 1, tzinfo=UTC)) is None
    assert serving_at(moves, datetime(2026, 1, 2, tzinfo=UTC)) == "1"
    assert serving_at(moves, datetime(2026, 1, 8, tzinfo=UTC)) == "1"
    assert serving_at(moves, datetime(2026, 1, 9, tzinfo=UTC)) == "2"
    assert serving_at(moves, datetime(2026, 1, 6, tzinfo=UTC), alias="challenger") == "3"


# -- approval ---------------------------------------------------------------------------------------------------
def _awaiting(config: Any, cutoff: Any, cycle_id: str, **train_options: Any) -> Any:
    training = steps.train(config, _tracking(), cutoff, cycle_id, **train_options)
    decision = steps.promote(
        config, _tracking(), training.run_id, steps.evaluate(config, _tracking(), training.run_id)
    )
    return decision


def test_with_approval_required_the_alias_moves_only_when_a_reviewer_approves(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    from datetime import UTC, datetime

    project = synthetic_project("reviewed", promotion={"approval": "required", "approval_timeout_minutes": 90})
    project.land_and_accept(range(2))
    config, cutoff = project.config, synth.cutoff_after(1)
    first = _awaiting(config, cutoff, "first", max_train_rows=20)
    # The gate promotes, the version is registered, but @champion waits.
    assert first.verdict == "promoted" and first.awaiting_approval and not first.promoted
    assert first.state == "awaiting_approval" and first.version == "1"
    assert steps.champion_version(_client(), config) is None
    assert _version_tags("reviewed", "1")[f"{TAG}decision"] == "awaiting_approval"
    assert steps.CycleRecord(cycle_id="first", recorded_at=first.decided_at, decision=first).outcome == (
        "awaiting approval v1"
    )
    request = steps.approval_request(config, first, "http://mlflow.example:5000/")
    assert request.subject.startswith("Promote reviewed v1? (rmse ")
    assert "- Serving: serving check passed: p95 " in request.body
    assert "[Model version v1 in MLflow](http://mlflow.example:5000/#/models/reviewed/versions/1)" in request.body
    at = datetime(2026, 12, 2, 10, tzinfo=UTC)
    approved = steps.conclude_approval(
        config, _tracking(), first.run_id, steps.Approval(approved=True, by="alice", at=at, comment="looks fine")
    )
    assert approved.promoted and approved.approval.by == "alice" and _champion("reviewed") == "1"
    assert approved.reason.startswith('approved by alice at 2026-12-02T10:00:00+00:00 ("looks fine"): first model')
    assert _version_tags("reviewed", "1")[f"{TAG}approved_by"] == "alice"
    # Asking again returns the recorded answer and moves nothing twice.
    again = steps.conclude_approval(
        config, _tracking(), first.run_id, steps.Approval(approved=False, by="x", at=at)
    )
    assert again.approval.by == "alice" and again.promoted
    # The serving check was shown in the request above; the rest is about the approval (each check costs seconds).
    serving = config.promotion.serving.model_copy(update={"enabled": False})
    config = config.model_copy(update={"promotion": config.promotion.model_copy(update={"serving": serving})})
    dry = steps.train(config, _tracking(), cutoff, "dry")
    steps.promote(config, _tracking(), dry.run_id, steps.evaluate(config, _tracking(), dry.run_id), dry_run=True)
    with pytest.raises(ValueError, match=r"not awaiting approval \(dry_run:"):
        steps.conclude_approval(config, _tracking(), dry.run_id, steps.Approval(approved=True, by="x", at=at))

    # Two candidates compared with v1 await at once: approving the first supersedes the second.
    second, third = (_awaiting(config, cutoff, name, max_train_rows=40) for name in ("second", "third"))
    assert (second.version, third.version) == ("2", "3") and second.awaiting_approval and third.awaiting_approval
    steps.conclude_approval(config, _tracking(), second.run_id, steps.Approval(approved=True, by="bob", at=at))
    late = steps.conclude_approval(
        config, _tracking(), third.run_id, steps.Approval(approved=True, by="bob", at=at)
    )
    assert late.verdict == "rejected" and late.superseded and not late.promoted
    assert late.reason.startswith("superseded: the champion moved from v1 to v2 (approval by bob at ")
    assert _champion("reviewed") == "2"
    moves = steps.alias_history(config, _tracking())
    assert [(m.action, m.by, m.from_version, m.to_version) for m in moves] == [
        ("approval", "alice", None, "1"),
        ("approval", "bob", "1", "2"),
    ]
    # Nobody answered in time: the scheduler's default rejects, and the record says so.
    fourth = _awaiting(config, cutoff, "fourth")
    assert fourth.awaiting_approval, fourth.reason
    timed_out = steps.conclude_approval(
        config, _tracking(), fourth.run_id, steps.Approval(approved=False, by=None, at=at, timed_out=True)
    )
    assert timed_out.verdict == "rejected" and _champion("reviewed") == "2"
    assert timed_out.reason.startswith(
        "rejected: no reviewer answered within 90 minutes (the default is to reject)"
    )
    assert _version_tags("reviewed", fourth.version)[f"{TAG}rejected_by"] == "timeout"
    card = _run_text(fourth.run_id, "model_card/model_card.md")
    assert "**Decision: rejected.**" in card and "**Review:** rejected: no reviewer answered" in card


def _run_text(run_id: str, path: str) -> str:
    import mlflow

    with _tracking().active():
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def test_cli_approve_moves_the_champion_and_amends_the_cycle_record(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project("cli_reviewed", promotion={"approval": "required"})
    project.land_and_accept(range(2))
    record = steps.run_cycle(project.config, _tracking(), synth.cutoff_after(1), "week-1", force=True)
    assert record.outcome == "awaiting approval v1"
    assert steps.cycle_table(project.config)[-1].decision == "awaiting approval v1"

    run_id = record.decision.run_id
    result = _invoke("approve", "-c", str(project.path), "--run-id", run_id, "--by", "carol", "--comment", "ok")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["approval"]["by"] == "carol"
    assert _champion("cli_reviewed") == "1"
    row = steps.cycle_table(project.config)[-1]
    assert (
        row.decision == "promoted v1" and row.reason.startswith("approved by carol at ") and '("ok")' in row.reason
    )
    unknown = _invoke("approve", "-c", str(project.path), "--run-id", "0" * 32)
    assert unknown.exit_code == 1
