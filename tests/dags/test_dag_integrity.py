"""DAG integrity and policy: every DAG parses, follows the house rules, and parses cheaply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROJECTS = sorted((REPO / "projects").glob("*.yaml"))
HEAVY = ["pandas", "numpy", "sklearn", "xgboost", "mlflow", "great_expectations", "evidently", "pyarrow", "boto3"]


def _dagbag(folder: Path = REPO / "dags"):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder))


@pytest.fixture(scope="module")
def dagbag():
    return _dagbag()


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_one_weekly_dag_per_project_file(dagbag) -> None:
    names = {yaml.safe_load(p.read_text())["name"] for p in PROJECTS}
    assert {f"retrain_{name}" for name in names} <= set(dagbag.dag_ids)
    assert PROJECTS, "the demo project file is missing"


def test_dag_policy(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        if dag_id.endswith("__invalid_config"):
            continue
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} has no documentation"
        assert dag.default_args.get("retries", 0) >= 2, f"{dag_id}: default retries < 2"
        assert dag.default_args.get("retry_exponential_backoff"), f"{dag_id}: retries without backoff"
        assert dag.max_active_runs == 1, f"{dag_id} may run two retrains at once"
        assert dag.dagrun_timeout is not None, f"{dag_id} has no run timeout"


def test_retrain_dag_shape(dagbag) -> None:
    dag = dagbag.dags["retrain_flights_arr_delay"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {
        "gate",
        "ingest",
        "validate",
        "drift",
        "plan_training",
        "train",
        "evaluate",
        "promote",
        "record",
        "watcher",
    }
    # Alert-triggered runs pass the cooldown gate first; everything else waits for it.
    assert tasks["gate"].downstream_task_ids == {"ingest", "watcher"}
    # Fail closed: training waits for validation; a data failure is never retried.
    assert tasks["validate"].downstream_task_ids == {"drift", "plan_training", "watcher"}
    # The train task only runs what plan_training decided, on the configured backend (local in the demo).
    assert tasks["plan_training"].downstream_task_ids == {"train", "watcher"}
    assert type(tasks["train"]).__name__ == "TrainerSubprocessOperator"
    assert tasks["train"].execution_timeout is not None
    assert tasks["validate"].retries >= 2  # storage errors are transient; a rejected batch fails at once
    assert tasks["train"].downstream_task_ids == {"evaluate", "promote", "watcher"}
    assert tasks["evaluate"].downstream_task_ids == {"promote", "watcher"}
    # The run fails when a step fails, although `record` (all_done) succeeds.
    assert tasks["watcher"].trigger_rule == "one_failed"
    assert tasks["watcher"].upstream_task_ids == set(tasks) - {"record", "watcher"}
    assert tasks["record"].trigger_rule == "all_done"
    assert set(tasks["record"].upstream_task_ids) == {"drift", "promote"}
    for step in ("gate", "ingest", "validate", "drift", "plan_training", "train", "evaluate", "promote"):
        assert tasks[step].retries >= 2, f"{step} should retry transient failures"
    assert {"force", "dry_run", "window_batches", "max_train_rows", "cutoff"} <= set(dag.params)


def test_monitor_dag_runs_when_batches_land_and_emits_the_drift_alert(dagbag) -> None:
    dag = dagbag.dags["monitor_flights_arr_delay"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"ingest", "validate", "drift", "concept", "raise_alert"}
    assert tasks["validate"].downstream_task_ids == {"drift", "concept", "raise_alert"}
    assert tasks["raise_alert"].upstream_task_ids == {"validate", "drift", "concept"}
    landed, labelled = dag.timetable.asset_condition.objects  # either starts a run
    assert landed.uri == "retrainer://flights_arr_delay/landing"
    assert labelled.uri == "retrainer://flights_arr_delay/labels"
    for asset, zone in ((landed, "landing"), (labelled, "labels")):
        [watcher] = asset.watchers
        assert type(watcher.trigger).__name__ == "LandingTrigger" and watcher.trigger.zone == zone
    [outlet] = tasks["raise_alert"].outlets
    assert outlet.name == "drift_alert_flights_arr_delay"
    assert dag.catchup is False  # landings, not the calendar, start it


def test_schedule_is_weekly_cron_or_a_drift_alert(dagbag) -> None:
    from airflow.sdk import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    dag = dagbag.dags["retrain_flights_arr_delay"]
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert isinstance(dag.timetable.timetable, CronTriggerTimetable)
    assert dag.timetable.timetable._expression == "0 3 * * 1"
    alert = dag.timetable.asset_condition
    assert alert.name == "drift_alert_flights_arr_delay"
    [watcher] = alert.watchers
    assert type(watcher.trigger).__name__ == "AlertInboxTrigger"
    assert watcher.trigger.directory.endswith("flights_arr_delay/alerts/inbox")
    assert dag.catchup is True  # the demo replays its weeks; see projects/flights.yaml


def test_parsing_imports_no_heavy_library() -> None:
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); "
        f"print(__import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "retrain_weekly.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_invalid_project_file_becomes_a_placeholder_naming_the_field(tmp_path, monkeypatch) -> None:
    good = yaml.safe_load((REPO / "projects" / "flights.yaml").read_text())
    bad = {**good, "metric": {"name": "accuracy"}}  # a classification metric on a regression project
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(good))
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(good))  # the same project name twice
    monkeypatch.setenv("RETRAINER_PROJECTS_DIR", str(tmp_path))
    bag = _dagbag()
    assert bag.import_errors == {}
    assert "retrain_flights_arr_delay" in bag.dag_ids  # one bad file does not hide the others
    placeholder = bag.dags["retrain_bad__invalid_config"]
    assert "metric" in placeholder.doc_md and "accuracy" in placeholder.doc_md
    assert "invalid-config" in placeholder.tags
    assert "already used" in bag.dags["retrain_twin__invalid_config"].doc_md


def test_plugin_loader_ignores_the_provider_package() -> None:
    """Airflow imports every non-ignored .py in plugins/ under its bare file name (mlflow.py -> `mlflow`)."""
    from airflow._shared.module_loading.file_discovery import find_path_from_directory

    loaded = [
        Path(p)
        for p in find_path_from_directory(str(REPO / "plugins"), ".airflowignore", "regexp")
        if p.endswith(".py")
    ]
    assert loaded == [], f"plugin loader would import these as top-level modules: {loaded}"
