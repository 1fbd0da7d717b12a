"""Concept drift: late labels attach to their batch, and the champion's error on them is judged.

The synthetic project runs with a real local MLflow store. Its weeks 0-2 train the champion; week 3 lands
without labels, and its labels arrive later, either as they truly are (the world did not change) or from a
changed world (the target moved), which must raise a concept-drift alert.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import alerts, steps, storage
from retrainer.catalog import BatchStatus, CatalogError
from retrainer.tracking import Tracking

pytestmark = pytest.mark.usefixtures("module_mlflow")

ROWS = 1000


def _concept(config: Any) -> dict[str, Any]:
    """The concept-drift step's result in its JSON form (as the monitor's next task gets it)."""
    return steps.concept_drift(config, Tracking.from_env()).to_json()


def _unlabelled(synth: SimpleNamespace, week: int) -> tuple[Any, Any]:
    """A synthetic week without its target, and the labels that arrive later (one per row, in order)."""
    frame = synth.week(week, ROWS)
    labels = frame[["y"]].copy()
    frame["y"] = float("nan")
    return frame, labels


@pytest.fixture(scope="module")
def project(synth: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A champion trained on weeks 0-2, and weeks 3 and 4 accepted without labels."""
    project = synth.make_project(tmp_path_factory.mktemp("concept"), "concept")
    project.land_and_accept(range(3), rows=ROWS)
    cutoff = synth.cutoff_after(2)
    tracking = Tracking.from_env()
    training = steps.train(project.config, tracking, cutoff, "cycle-1")
    steps.promote(
        project.config, tracking, training.run_id, steps.evaluate(project.config, tracking, training.run_id)
    )
    catalog = project.catalog
    for week in (3, 4):
        frame, _ = _unlabelled(synth, week)
        catalog.land(synth.batch_id(week), frame)
    catalog.register_new()
    for week in (3, 4):
        catalog.accept(synth.batch_id(week), {"success": True, "summary": "accepted by the test"})
    return project


def test_labels_as_expected_are_checked_and_raise_no_alert(project: Any, synth: SimpleNamespace) -> None:
    batch = synth.batch_id(3)
    _, labels = _unlabelled(synth, 3)
    project.catalog.land_labels(batch, labels)
    result = _concept(project.config)
    assert result["registered"] == [batch]
    [check] = result["checks"]
    assert check["rows"] == ROWS and check["champion_version"] == "1"
    assert abs(check["degradation"]) < project.config.concept_drift.max_degradation, check["note"]
    assert check["degraded"] is False and result["drift_detected"] is False
    assert alerts.alert_from_concept(steps.ConceptDriftResult.model_validate(result)) is None
    report = json.loads(storage.read_bytes(check["report_uri"]))
    assert report["labels"]["sha256"] == project.catalog.get(batch).labels["sha256"]
    # Checked once: the same labels do not count again.
    assert _concept(project.config)["checks"] == []


def test_late_labels_fill_the_batch_for_training(project: Any, synth: SimpleNamespace) -> None:
    catalog = project.catalog
    record = catalog.get(synth.batch_id(3))
    assert record.labels["labelled"] == ROWS
    loaded = catalog.load([record])
    assert loaded["y"].notna().all()
    assert catalog.load([record], with_labels=False)["y"].isna().all()  # the batch itself never changes
    # A cycle now trains on week 3's rows.
    training = steps.train(project.config, Tracking.from_env(), synth.cutoff_after(3), "cycle-2", window_batches=4)
    assert synth.batch_id(3) in training.window


def test_a_changed_world_raises_a_concept_drift_alert(project: Any, synth: SimpleNamespace) -> None:
    batch = synth.batch_id(4)
    _, labels = _unlabelled(synth, 4)
    labels["y"] = labels["y"] + 3.0  # the same inputs now mean a different outcome
    project.catalog.land_labels(batch, labels)
    result = _concept(project.config)
    [check] = result["checks"]
    assert check["degraded"] is True and check["degradation"] > 0.05, check["note"]
    assert result["summary"].startswith("CONCEPT DRIFT")
    alert = alerts.alert_from_concept(steps.ConceptDriftResult.model_validate(result))
    assert alert is not None and alert.kind is alerts.AlertKind.CONCEPT_DRIFT
    assert alert.batch_ids == [batch] and alert.drift["degradation"] == check["degradation"]
    assert alert.report_uri == check["report_uri"]


def test_labels_changed_after_registration_are_refused(project: Any, synth: SimpleNamespace) -> None:
    catalog = project.catalog
    record = catalog.get(synth.batch_id(4))
    Path(record.labels["uri"]).write_bytes(storage.parquet_bytes(_unlabelled(synth, 4)[1].head(5)))
    with pytest.raises(CatalogError, match="changed since they were registered"):
        catalog.load([record])


# -- label files that cannot be used ------------------------------------------------------------------------
@pytest.fixture
def fresh(synth: SimpleNamespace, synthetic_project: Any) -> Any:
    """A project without a champion, week 0 accepted without labels and week 1 quarantined."""
    project = synthetic_project("labels")
    frame, _ = _unlabelled(synth, 0)
    catalog = project.catalog
    catalog.land(synth.batch_id(0), frame)
    catalog.land(synth.batch_id(1), synth.week(1, 50))
    catalog.register_new()
    catalog.accept(synth.batch_id(0), {"success": True})
    catalog.quarantine_batch(synth.batch_id(1), {"success": False, "summary": "test"})
    return project


@pytest.mark.parametrize(
    ("week", "labels", "named"),
    [
        (0, lambda s: s.week(0, ROWS)[["x1"]], "no target column 'y'"),
        (0, lambda s: s.week(0, ROWS)[["y"]].head(10), "have 10 rows, the batch 1000"),
        (1, lambda s: s.week(1, 50)[["y"]], "quarantined: its labels cannot be used"),
    ],
)
def test_unusable_labels_are_rejected_with_the_reason_and_kept(
    fresh: Any, synth: SimpleNamespace, week: int, labels: Any, named: str
) -> None:
    catalog = fresh.catalog
    catalog.land_labels(synth.batch_id(week), labels(synth))
    result = _concept(fresh.config)
    [(name, error)] = result["rejected"]
    assert named in error and named in result["summary"]
    rejected = Path(catalog.labels) / "rejected" / name
    assert rejected.exists()
    assert named in Path(f"{rejected}.error.txt").read_text()
    assert not (Path(catalog.labels) / name).exists()


def test_labels_wait_for_their_batch_and_nothing_is_judged_without_a_champion(
    fresh: Any, synth: SimpleNamespace
) -> None:
    catalog = fresh.catalog
    catalog.land_labels(synth.batch_id(5), synth.week(5, 20)[["y"]])  # its batch has not landed yet
    catalog.land_labels(synth.batch_id(0), _unlabelled(synth, 0)[1])
    result = _concept(fresh.config)
    assert result["waiting"] == [synth.batch_id(5)]
    [check] = result["checks"]
    assert check["degraded"] is False and "no champion" in check["note"]
    assert catalog.get(synth.batch_id(0)).status is BatchStatus.ACCEPTED


def test_labels_are_matched_on_the_schema_id_when_there_is_one(synth: SimpleNamespace, tmp_path: Path) -> None:
    import yaml

    from retrainer.catalog import Catalog
    from retrainer.config import load_config

    document = synth.config_dict("with_ids", root_uri=str(tmp_path / "data"))
    document["schema"]["columns"]["rid"] = "string"
    document["schema"]["id"] = "rid"
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(document))
    catalog = Catalog(load_config(path))
    frame, labels = _unlabelled(synth, 0)
    frame["rid"] = [f"r{i}" for i in range(ROWS)]
    labels["rid"] = frame["rid"]
    catalog.land(synth.batch_id(0), frame)
    catalog.register_new()
    catalog.accept(synth.batch_id(0), {"success": True})
    shuffled = labels.sample(frac=1.0, random_state=1).head(600)  # any order, not every row
    catalog.land_labels(synth.batch_id(0), shuffled)
    [record] = catalog.register_labels().registered
    assert record.labels["labelled"] == 600
    loaded = catalog.load([record]).set_index("rid")
    assert loaded.loc[shuffled["rid"], "y"].tolist() == shuffled["y"].tolist()
    assert catalog.late_labelled_rows(record)["rid"].tolist() == sorted(shuffled["rid"], key=lambda r: int(r[1:]))
