"""Whole cycles in one process on the synthetic project, with its own expectation suite.

This is what a new dataset needs: a project file and a suite, no code. It covers the validate and drift steps
(real Great Expectations and Evidently) and ``run_cycle`` with a local MLflow store.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from retrainer import steps, storage
from retrainer.catalog import BatchStatus
from retrainer.config import load_config
from retrainer.tracking import Tracking

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory, synth) -> Path:
    return synth.context_with_suite(tmp_path_factory.mktemp("gx"), "synthetic_sales")


@pytest.fixture(scope="module")
def cycles(tmp_path_factory: pytest.TempPathFactory, gx_root: Path, module_mlflow: str, synth) -> dict:
    """Four weekly cycles: first model, a normal week, a corrupted week, a drifted week."""
    project = synth.make_project(tmp_path_factory.mktemp("cycle"), min_improvement=0.0, floor=5.0)
    # 400-row weeks: a Wasserstein distance of 0.1 is within noise; 0.3 is not (week 3 shifts x1 by 4 sd).
    document = yaml.safe_load(project.path.read_text())
    document["drift"]["num_threshold"] = 0.3
    project.path.write_text(yaml.safe_dump(document))
    project = dataclasses.replace(project, config=load_config(project.path))
    project.land([0], rows=400)
    project.land([1], rows=400)
    corrupted = synth.week(2, 400)
    corrupted.loc[:50, "x1"] = 1000.0  # a unit bug upstream
    project.catalog.land(synth.batch_id(2), corrupted)
    project.land([3], rows=400, x1_shift=4.0)  # the world changed
    records = {}
    for week in range(4):
        record = steps.run_cycle(
            project.config, _tracking(), synth.cutoff_after(week), trigger="scheduled", context_root=gx_root
        )
        records[week] = record.to_json()  # as written to reports/cycles/
    return {"project": project, "records": records}


def _tracking() -> Tracking:
    return Tracking.from_env()


def _client():
    return _tracking().client()


def test_first_cycle_validates_trains_and_promotes(cycles: dict, gx_root: Path) -> None:
    record = cycles["records"][0]
    assert record.get("error") is None
    assert record["validation"]["accepted"] == [record["ingest"]["pending"][0]]
    assert "passed 4/4" in next(iter(record["validation"]["summaries"].values()))
    # The Great Expectations context is only read: the result and its Data Docs page are in the data root.
    assert not (gx_root / "uncommitted").exists()
    page = Path(urlparse(record["validation"]["data_docs"]).path)
    assert page.is_file() and page.suffix == ".html"
    assert page.is_relative_to(Path(cycles["project"].config.data.root_uri) / "reports" / "gx" / "data_docs")
    assert (page.parents[3] / "static").is_dir() or any(page.parents[4].glob("static"))
    assert record["drift"]["status"] == "no_champion"
    assert record["decision"]["verdict"] == "promoted" and record["decision"]["version"] == "1"
    version = _client().get_model_version(cycles["project"].config.model_name, "1")
    assert version.description.startswith("promoted: first model")


def test_drift_is_measured_against_the_champions_training_data(cycles: dict) -> None:
    record, project = cycles["records"][1], cycles["project"]
    drift = record["drift"]
    assert drift["status"] == "computed" and drift["reference_version"] == "1"
    assert drift["drift_detected"] is False, drift["summary"]
    names = sorted(storage.basename(uri) for uri in drift["report_uris"])
    assert names == ["drift_report.html", "drift_report.json", "drift_summary.json"]
    summary = json.loads(storage.read_bytes(next(u for u in drift["report_uris"] if u.endswith("summary.json"))))
    assert {c["column"] for c in summary["columns"]} == set(project.config.features)
    run = _client().get_run(drift["mlflow_run_id"])
    assert run.data.tags["retrainer.kind"] == "drift"
    assert "share_drifted" in run.data.metrics


def test_corrupted_batch_is_quarantined_and_the_cycle_stops(cycles: dict) -> None:
    record, project = cycles["records"][2], cycles["project"]
    batch = record["ingest"]["pending"][0]
    assert "quarantined" in record["error"] and "expect_column_values_to_be_between(x1)" in record["error"]
    assert record["training"] is None and record["decision"] is None
    assert record["batches"] == {batch: "quarantined"}
    catalog = project.catalog
    assert catalog.get(batch).status is BatchStatus.QUARANTINED
    report = json.loads(storage.read_bytes(storage.join(catalog.quarantine, batch, "validation.json")))
    assert report["success"] is False
    assert not storage.exists(storage.join(catalog.landing, f"{batch}.parquet"))
    assert storage.exists(storage.join(catalog.quarantine, batch, f"{batch}.parquet"))
    versions = _client().search_model_versions(f"name='{project.config.model_name}'")
    cycles_with_a_version = {v.tags.get("retrainer.cycle_id") for v in versions}
    assert record["cycle_id"] not in cycles_with_a_version
    assert {cycles["records"][w]["cycle_id"] for w in (0, 1, 3)} == cycles_with_a_version


def test_drifted_week_is_flagged_and_never_trained_on_quarantined_data(cycles: dict) -> None:
    record = cycles["records"][3]
    assert record["drift"]["drift_detected"] is True
    assert "x1" in record["drift"]["summary"]  # the key feature named in the summary line
    assert cycles["records"][2]["ingest"]["pending"][0] not in record["training"]["window"]


def test_cycle_table_has_a_row_per_cycle(cycles: dict) -> None:
    rows = steps.cycle_table(cycles["project"].config)
    assert [r.validation for r in rows] == ["accepted", "accepted", "quarantined", "accepted"]
    assert rows[0].decision == "promoted v1"
    assert rows[2].decision == f"quarantined {cycles['records'][2]['ingest']['pending'][0]}"
    assert rows[2].reason.startswith("1/") and "expect_column_values_to_be_between(x1)" in rows[2].reason


def test_no_new_data_is_not_retrained_unless_forced(cycles: dict, gx_root: Path, synth) -> None:
    config = cycles["project"].config
    idle = steps.run_cycle(config, _tracking(), synth.cutoff_after(3), cycle_id="idle", context_root=gx_root)
    assert "no new accepted batch" in idle.error
    forced = steps.run_cycle(
        config,
        _tracking(),
        synth.cutoff_after(3),
        cycle_id="forced",
        force=True,
        dry_run=True,
        context_root=gx_root,
    )
    assert forced.error is None
    assert forced.decision.dry_run is True and forced.decision.version is None


def test_a_retried_promote_reuses_the_version_it_registered(cycles: dict) -> None:
    config, record = cycles["project"].config, cycles["records"][3]
    client = _client()
    before = client.search_model_versions(f"name='{config.model_name}'")
    champion_before = client.get_model_version_by_alias(config.model_name, "champion").version
    evaluation = steps.Evaluation.model_validate(record["evaluation"])
    again = steps.promote(config, _tracking(), record["training"]["run_id"], evaluation)
    assert again.version == record["decision"]["version"]
    assert again.verdict.value == record["decision"]["verdict"]
    assert len(client.search_model_versions(f"name='{config.model_name}'")) == len(before)
    assert client.get_model_version_by_alias(config.model_name, "champion").version == champion_before


def test_a_batch_validated_outside_a_cycle_still_counts_as_new_data(cycles: dict, gx_root: Path, synth) -> None:
    # The drift monitor validates batches as they land; the next cycle must still train on them.
    project = cycles["project"]
    project.land([4], rows=400)
    batch = synth.batch_id(4)
    cutoff = synth.cutoff_after(4)
    ingested = steps.ingest(project.config, _tracking(), cutoff)
    assert steps.validate(project.config, ingested.pending, context_root=gx_root).accepted == [batch]
    assert steps.untrained_batches(project.config, _tracking(), cutoff) == [batch]
    record = steps.run_cycle(project.config, _tracking(), cutoff, cycle_id="after-monitor", context_root=gx_root)
    assert record.error is None, record.error
    assert record.validation.accepted == []  # nothing left to validate ...
    assert batch in record.training.window  # ... but the week is trained on
    assert steps.untrained_batches(project.config, _tracking(), cutoff) == []


def test_each_cycle_has_a_note_that_says_what_it_decided(cycles: dict) -> None:
    """The run note's first line tells a promotion, a rejection and a quarantine apart at a glance."""
    from retrainer.links import Links
    from retrainer.run_notes import MAX_NOTE, cycle_note

    config = cycles["project"].config
    records = {week: steps.CycleRecord.model_validate(raw) for week, raw in cycles["records"].items()}
    first = cycle_note(records[0]).splitlines()[0]
    assert first.startswith("promoted v1: rmse ") and " vs " not in first  # a first model: nothing to beat

    quarantined = records[2]
    [batch] = quarantined.quarantined
    assert batch.batch_id == quarantined.ingest.pending[0]
    assert batch.summary.startswith("1/") and "expectations failed" in batch.summary
    assert "expect_column_values_to_be_between(x1)" in batch.summary
    assert batch.report_uri.endswith(f"quarantine/{batch.batch_id}/validation.json")
    note = cycle_note(quarantined)
    assert note.splitlines()[0] == f"quarantined {batch.batch_id}: {batch.summary}"

    for week in (1, 3):
        decision = records[week].decision
        head = cycle_note(records[week]).splitlines()[0]
        change = (decision.candidate - decision.champion) / abs(decision.champion)  # rmse: the metric's change
        assert head == (
            f"{records[week].outcome}: rmse {decision.candidate:.4g} vs {decision.champion:.4g} of "
            f"v{decision.champion_version} ({change:+.1%})"
        )
        assert f"- why: {decision.reason}" in cycle_note(records[week])

    linked = cycle_note(records[0], Links(airflow="/af", mlflow="http://mlflow:5000"), config.name)
    assert f"[model version v1](http://mlflow:5000/#/models/{config.model_name}/versions/1)" in linked
    assert f"[model page](/af/retrainer/models/{config.name})" in linked
    assert all(len(cycle_note(r, Links(mlflow="http://m"), config.name)) <= MAX_NOTE for r in records.values())


def test_the_model_timeline_tells_which_model_serves_since_when_why_and_what_each_cycle_did(cycles: dict) -> None:
    from retrainer.links import Links
    from retrainer.timeline import model_timeline

    project = cycles["project"]
    config = project.config
    links = Links(airflow="/af", mlflow="http://mlflow:5000")
    timeline = model_timeline(config, _tracking(), links)

    champion = _client().get_model_version_by_alias(config.model_name, "champion")
    assert timeline.champion is not None and timeline.champion.version == str(champion.version)
    assert timeline.champion.how == "promotion" and timeline.champion.since is not None
    assert timeline.champion.reason and timeline.champion.score == pytest.approx(
        float(champion.tags[f"retrainer.candidate_{config.metric.name}"])
    )
    assert timeline.champion.url == f"http://mlflow:5000/#/models/{config.model_name}/versions/{champion.version}"

    ids = [cycles["records"][week]["cycle_id"] for week in range(4)]  # other tests of the module add cycles
    oldest_first = [c for c in reversed(timeline.cycles) if c.cycle_id in ids]
    assert [c.cycle_id for c in oldest_first] == ids
    kinds = [c.decision_kind for c in oldest_first]
    expected = [steps.CycleRecord.model_validate(cycles["records"][w]).outcome_kind for w in range(4)]
    assert kinds == [*expected[:2], "quarantined", expected[3]] and kinds[0] == "promoted"
    quarantined = oldest_first[2]
    assert quarantined.version is None and quarantined.candidate_run_url is None
    assert (quarantined.data_docs_url or "").startswith(f"/af/retrainer/models/{config.name}/files/reports/gx/")
    first = oldest_first[0]
    assert first.version_url.endswith(f"/versions/{first.version}") and first.candidate_run_url.startswith(
        "http://mlflow:5000/#/runs/"
    )
    drifted = oldest_first[3]
    assert drifted.drift_report_url.endswith(".html") and "/files/reports/" in drifted.drift_report_url
    assert drifted.drift_share == cycles["records"][3]["drift"]["share_drifted"]
    assert first.airflow_url is None  # run by the CLI: no Airflow run to link

    [entry] = [q for q in timeline.quarantined if q.batch_id == cycles["records"][2]["ingest"]["pending"][0]]
    assert entry.report_url.endswith(f"files/quarantine/{entry.batch_id}/validation.json")
    assert [m.move.to_version for m in reversed(timeline.moves)] == [
        m.to_version for m in steps.alias_history(config, _tracking())
    ]
    shares = [p.value for p in timeline.drift_share]
    measured = [cycles["records"][w]["drift"]["share_drifted"] for w in (1, 3)]
    assert shares[: len(measured)] == measured  # oldest first: the fixture's cycles ran before the others
    assert timeline.champion_score and all(p.value > 0 for p in timeline.champion_score)


def test_the_cli_prints_the_model_timeline(cycles: dict) -> None:
    from typer.testing import CliRunner

    from retrainer.cli import app

    project = cycles["project"]
    result = CliRunner().invoke(
        app, ["timeline", "-c", str(project.path), "--mlflow-ui", "http://mlflow.example", "--airflow-ui", "/af"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["model"] == project.config.model_name
    assert {cycles["records"][w]["cycle_id"] for w in range(4)} <= {c["cycle_id"] for c in printed["cycles"]}
    assert printed["champion"]["url"].startswith(f"http://mlflow.example/#/models/{project.config.model_name}/")
    assert all(
        q["report_url"].startswith(f"/af/retrainer/models/{project.config.name}/files/")
        for q in printed["quarantined"]
    )
