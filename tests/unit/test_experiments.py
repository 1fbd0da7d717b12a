"""The project's MLflow experiment as the MLflow UI shows it: its kind, description and primary metric, and
run names that say what a run is (the steps run for real against a local SQLite store)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from retrainer import experiments, steps
from retrainer.tracking import Tracking

pytestmark = pytest.mark.usefixtures("mlflow_tracking")


def test_a_run_is_named_after_its_newest_batch_and_what_it_is() -> None:
    assert experiments.run_name(["2013-01-07", "2013-01-21", "2013-01-14"], "candidate") == "2013-01-21 candidate"
    assert experiments.run_name(["2013-02-11"], "drift") == "2013-02-11 drift"
    with pytest.raises(ValueError, match="a drift run needs the batches it is about"):
        experiments.run_name([], "drift")


def test_the_experiment_opens_as_model_training_with_its_description_and_runs_named_by_week(
    tracking: Tracking, synth: SimpleNamespace, tmp_path
) -> None:
    project = synth.make_project(tmp_path / "named", "named", promotion={"serving": {"enabled": False}})
    ids = project.land_and_accept(range(3))
    config = project.config
    first = steps.train(config, tracking, synth.cutoff_after(1), "manual__2013-01-21T03:00:00+00:00")
    steps.promote(config, tracking, first.run_id, steps.evaluate(config, tracking, first.run_id))

    client = tracking.client()
    experiment = client.get_experiment_by_name(config.name)
    tags = experiment.tags
    assert tags[experiments.KIND_TAG] == "custom_model_development"  # not MLflow's GenAI overview
    metric = config.metric.name
    assert tags[experiments.PRIMARY_METRIC_TAG] == f"holdout_{metric}"
    assert tags[experiments.PRIMARY_METRIC_GREATER_TAG] == str(config.metric.greater_is_better).lower()
    description = tags[experiments.DESCRIPTION_TAG]
    assert config.model_name in description and f"`champion_holdout_{metric}`" in description
    run = client.get_run(first.run_id)
    assert run.info.run_name == f"{ids[1]} candidate"
    assert run.data.tags["retrainer.cycle_id"] == "manual__2013-01-21T03:00:00+00:00"  # the Airflow run, kept
    # A user's own description stays; the drift run of the next week is named after it.
    client.set_experiment_tag(experiment.experiment_id, experiments.DESCRIPTION_TAG, "ours")
    champion = steps.champion_version(client, config)
    drift = steps.drift(config, tracking, [ids[2]], "scheduled__2013-01-28", str(champion.version))
    assert drift.status != "failed", drift.summary
    [drift_run] = client.search_runs([experiment.experiment_id], "tags.`retrainer.kind` = 'drift'")
    assert drift_run.info.run_name == f"{ids[2]} drift"
    assert client.get_experiment(experiment.experiment_id).tags[experiments.DESCRIPTION_TAG] == "ours"
