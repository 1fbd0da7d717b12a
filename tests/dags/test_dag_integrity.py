"""DAG integrity and policy: every DAG parses, follows the house rules, and parses cheaply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROJECTS = sorted((REPO / "projects").glob("*.yaml"))
HEAVY = ["pandas", "numpy", "sklearn", "xgboost", "mlflow", "great_expectations", "evidently", "pyarrow", "boto3"]


def _dagbag(folder: Path = REPO / "dags"):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder))


def _dag_module() -> Any:
    """``dags/retrain_weekly.py`` as a module (its ``build_dag``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("retrain_weekly_under_test", REPO / "dags" / "retrain_weekly.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        if dag_id.startswith("rollback_"):
            # Not retried: a retry after a move that half-happened would roll back a second time.
            assert dag.default_args.get("retries") == 0 and dag.schedule is None, f"{dag_id} must be manual"
        else:
            assert dag.default_args.get("retries", 0) >= 2, f"{dag_id}: default retries < 2"
            assert dag.default_args.get("retry_exponential_backoff"), f"{dag_id}: retries without backoff"
        assert dag.max_active_runs == 1, f"{dag_id} may run two retrains at once"
        assert dag.dagrun_timeout is not None, f"{dag_id} has no run timeout"


def test_rollback_dag_is_manual_with_a_target_and_a_required_reason(dagbag) -> None:
    dag = dagbag.dags["rollback_flights_arr_delay"]
    assert [t.task_id for t in dag.tasks] == ["resolve_project", "move_champion_back"]
    params = dag.params.dump()
    assert params == {"to_version": None, "reason": None}  # the reason has no default: it must be given
    schema = {name: dag.params.get_param(name).schema for name in params}
    assert schema["reason"]["minLength"] == 3 and schema["to_version"]["pattern"] == "^[0-9]+$"


def test_retrain_dag_shape(dagbag) -> None:
    dag = dagbag.dags["retrain_flights_arr_delay"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {
        "resolve_project",
        "gate",
        "ingest",
        "validate",
        "drift",
        "plan_training",
        "train",
        "evaluate",
        "promote",
        "champion_moved",
        "record",
        "watcher",
    }
    # The project file is read once; every task that needs the project gets that snapshot.
    assert tasks["resolve_project"].upstream_task_ids == set()
    assert tasks["resolve_project"].downstream_task_ids == {
        "gate",
        "ingest",
        "validate",
        "drift",
        "plan_training",
        "evaluate",
        "promote",
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
    from retrainer_provider.exceptions import TaskRejected

    policy = tasks["validate"].retry_policy
    assert policy.evaluate(TaskRejected("quarantined"), 1, 3).action.value == "fail"
    assert policy.evaluate(OSError("S3 unreachable"), 1, 3).action.value == "default"
    assert tasks["train"].downstream_task_ids == {"evaluate", "promote", "watcher"}
    assert tasks["evaluate"].downstream_task_ids == {"promote", "watcher"}
    # The run fails when a step fails, although `record` (all_done) succeeds.
    assert tasks["watcher"].trigger_rule == "one_failed"
    assert tasks["watcher"].upstream_task_ids == set(tasks) - {"record", "watcher", "champion_moved"}
    # The grid shows the outcome: champion_moved succeeds only when @champion moved (it never fails the run).
    assert tasks["champion_moved"].upstream_task_ids == {"promote"} and tasks["champion_moved"].retries == 0
    assert tasks["record"].trigger_rule == "all_done"
    assert set(tasks["record"].upstream_task_ids) == {"drift", "promote"}
    for step in ("gate", "ingest", "validate", "drift", "plan_training", "train", "evaluate", "promote"):
        assert tasks[step].retries >= 2, f"{step} should retry transient failures"
    # The steps that change the batch catalog run one at a time per project, with the monitor's.
    assert {t for t, task in tasks.items() if task.pool == "retrainer_flights_arr_delay"} == {"ingest", "validate"}
    assert {"force", "dry_run", "window_batches", "max_train_rows", "cutoff"} <= set(dag.params)


def test_promote_drift_and_validate_link_to_what_they_made_and_the_dags_link_their_model_page(dagbag) -> None:
    """Extra links, as the DAG processor serializes them (Airflow 3 computes them in the worker, then reads
    them from XCom): promote -> the MLflow model version, drift -> Evidently, validate -> Data Docs."""
    from airflow.serialization.serialized_objects import DagSerialization
    from retrainer_ui import RetrainerPlugin

    for dag_id, expected in (
        (
            "retrain_flights_arr_delay",
            {"promote": "MLflow model version", "drift": "Evidently drift report", "validate": "Data Docs"},
        ),
        ("monitor_flights_arr_delay", {"drift": "Evidently drift report", "validate": "Data Docs"}),
    ):
        serialized = DagSerialization.to_dict(dagbag.dags[dag_id])["dag"]["tasks"]
        links = {}
        for task in serialized:
            fields = task["__var"]
            links[fields["task_id"]] = list(fields.get("_operator_extra_links") or {})  # {name: xcom key}
        assert {task: names for task, names in links.items() if names} == {t: [n] for t, n in expected.items()}
    views = {view["destination"]: view for view in RetrainerPlugin.external_views}
    assert views["dag"]["href"] == "/retrainer/dags/{DAG_ID}" and views["nav"]["href"] == "/retrainer/"
    assert [app["url_prefix"] for app in RetrainerPlugin.fastapi_apps] == ["/retrainer"]


def test_monitor_dag_runs_when_batches_land_and_emits_the_drift_alert(dagbag) -> None:
    dag = dagbag.dags["monitor_flights_arr_delay"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"resolve_project", "ingest", "validate", "drift", "concept", "raise_alert"}
    assert tasks["validate"].downstream_task_ids == {"drift", "concept", "raise_alert"}
    assert tasks["raise_alert"].upstream_task_ids == {"resolve_project", "validate", "drift", "concept"}
    pool = "retrainer_flights_arr_delay"  # shared with the weekly cycle
    assert {t for t, task in tasks.items() if task.pool == pool} == {"ingest", "validate", "concept"}
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
    from airflow.timetables.events import EventsTimetable

    dag = dagbag.dags["retrain_flights_arr_delay"]
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    # The demo's schedule has ended: its weekly ticks, listed, are the time part.
    assert isinstance(dag.timetable.timetable, EventsTimetable)
    ticks = [tick.isoformat() for tick in dag.timetable.timetable.event_dates]
    assert ticks[0] == "2013-01-14T03:00:00+00:00" and ticks[-1] == "2013-03-11T03:00:00+00:00" and len(ticks) == 9
    assert dag.timetable.timetable.summary == "0 3 * * 1 (UTC) from 2013-01-08 to 2013-03-11"
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


def test_plugin_loader_imports_only_the_ui_plugin_and_not_the_provider_package() -> None:
    """Airflow imports every non-ignored .py in plugins/ under its bare file name (mlflow.py -> `mlflow`): only
    retrainer_ui.py (the model pages), whose name shadows no installed package."""
    import importlib.util

    from airflow._shared.module_loading.file_discovery import find_path_from_directory

    loaded = [
        Path(p)
        for p in find_path_from_directory(str(REPO / "plugins"), ".airflowignore", "regexp")
        if p.endswith(".py")
    ]
    assert loaded == [REPO / "plugins" / "retrainer_ui.py"], f"plugin loader would import: {loaded}"
    spec = importlib.util.find_spec("retrainer_ui")
    assert spec is None or Path(spec.origin or "") == loaded[0], "retrainer_ui would shadow an installed module"


# -- many models on one deployment ----------------------------------------------------------------------------
def _many_projects(folder: Path, count: int) -> list[str]:
    """``count`` project files like the demo's, each its own name, registered model and data root."""
    demo = yaml.safe_load((REPO / "projects" / "flights.yaml").read_text())
    names = []
    for i in range(count):
        name = f"model_{i:02d}"
        document = {**demo, "name": name, "registered_model": f"{name}_registered"}
        document["data"] = {"root_uri": f"s3://retrainer-data/{name}"}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(document))
        names.append(name)
    return names


def test_25_projects_parse_in_under_5_seconds_and_one_bad_file_hides_nothing(tmp_path: Path) -> None:
    names = _many_projects(tmp_path, 25)
    (tmp_path / "broken.yaml").write_text("name: broken\nmetric: {name: rmse}\n")  # most fields missing
    # As the dag-processor does: a fresh interpreter parses the DAG folder; Airflow times the file itself.
    code = (
        "import json; from airflow.dag_processing.dagbag import DagBag; "
        f"bag = DagBag(dag_folder={str(REPO / 'dags')!r}); "
        "print(json.dumps({'dags': sorted(bag.dag_ids), 'errors': list(bag.import_errors), "
        "'seconds': sum(s.duration.total_seconds() for s in bag.dagbag_stats), "
        "'pools': sorted({t.pool for d in bag.dags.values() for t in d.tasks})}))"
    )
    env = {**os.environ, "RETRAINER_PROJECTS_DIR": str(tmp_path), "PYTHONPATH": str(REPO / "plugins")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == []
    expected = {f"{kind}_{name}" for name in names for kind in ("retrain", "monitor", "rollback")}
    assert set(parsed["dags"]) == expected | {"retrain_broken__invalid_config"}
    # Each project's data steps have a pool of their own (one project's backlog never blocks another's).
    assert {f"retrainer_{name}" for name in names} <= set(parsed["pools"])
    assert parsed["seconds"] < 5.0, f"25 projects took {parsed['seconds']:.2f} s to parse"


def test_projects_sharing_a_registered_model_or_a_data_root_are_refused(tmp_path: Path) -> None:
    from retrainer.projects import scan_projects

    _many_projects(tmp_path, 2)
    twin = yaml.safe_load((tmp_path / "model_00.yaml").read_text())
    (tmp_path / "same_model.yaml").write_text(
        yaml.safe_dump({**twin, "name": "other", "data": {"root_uri": "/x"}})
    )
    (tmp_path / "same_root.yaml").write_text(
        yaml.safe_dump({**twin, "name": "third", "registered_model": "third_model"})
    )
    scan = scan_projects(tmp_path)
    assert [p.name for p, _ in scan.valid] == ["model_00.yaml", "model_01.yaml"]
    errors = {path.name: str(error) for path, error in scan.invalid}
    assert "registered model 'model_00_registered' is already used" in errors["same_model.yaml"]
    assert "data root 's3://retrainer-data/model_00' is already used" in errors["same_root.yaml"]


def _demo_dag_with(promotion: dict, dag_id: str, folder: Path, monkeypatch) -> Any:
    """The demo's DAG ``dag_id`` parsed from a copy of its project file with ``promotion`` keys changed."""
    demo = yaml.safe_load((REPO / "projects" / "flights.yaml").read_text())
    demo["promotion"] = {**demo["promotion"], **promotion}
    (folder / "changed.yaml").write_text(yaml.safe_dump(demo))
    monkeypatch.setenv("RETRAINER_PROJECTS_DIR", str(folder))
    bag = _dagbag()
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def test_approval_required_puts_a_reviewer_between_promote_and_the_alias(
    dagbag, tmp_path: Path, monkeypatch
) -> None:
    from datetime import timedelta

    changes = {"approval": "required", "approval_timeout_minutes": 90}
    dag = _demo_dag_with(changes, "retrain_flights_arr_delay", tmp_path, monkeypatch)
    tasks = {t.task_id: t for t in dag.tasks}
    approve = tasks["approve"]
    assert type(approve).__name__ == "PromotionApprovalOperator"
    assert approve.upstream_task_ids == {"promote"}
    assert approve.options == ["Approve", "Reject"] and approve.defaults == ["Reject"]
    assert approve.response_timeout == timedelta(minutes=90)
    assert set(approve.params) == {"comment"}
    # The alias moves only in conclude_approval, after the answer; record reads the concluded decision.
    assert tasks["conclude_approval"].upstream_task_ids == {"resolve_project", "promote", "approve"}
    assert set(tasks["record"].upstream_task_ids) == {"drift", "conclude_approval"}
    assert {"approve", "conclude_approval"} <= tasks["watcher"].upstream_task_ids
    # The run outlives the review's timeout.
    assert dag.dagrun_timeout == timedelta(hours=2, minutes=90)
    assert "approval" in dag.tags and "**approve** waits for a reviewer" in dag.doc_md
    # Without approval the demo's DAG has neither task.
    assert not {"approve", "conclude_approval"} & set(dagbag.dags["retrain_flights_arr_delay"].task_ids)


def test_shadow_mode_judges_the_challenger_in_the_monitor_after_the_labels_attach(
    dagbag, tmp_path: Path, monkeypatch
) -> None:
    changes = {"mode": "shadow", "shadow": {"wins": 2}}
    dag = _demo_dag_with(changes, "monitor_flights_arr_delay", tmp_path, monkeypatch)
    tasks = {t.task_id: t for t in dag.tasks}
    assert tasks["shadow"].upstream_task_ids == {"resolve_project", "concept"}
    assert tasks["shadow"].pool == "retrainer_flights_arr_delay"
    assert "**Shadow** (`promotion.mode: shadow`)" in dag.doc_md and "2 won batches make it champion" in dag.doc_md
    # The demo's monitor (mode: enabled) has no shadow task.
    assert "shadow" not in dagbag.dags["monitor_flights_arr_delay"].task_ids


def test_a_run_by_hand_after_the_schedule_ended_gets_its_tasks(dagbag) -> None:
    """The trigger form starts a run at "now": no end date may keep Airflow from creating its tasks, while the
    scheduler still stops at the schedule's end."""
    from datetime import UTC, datetime

    import pendulum
    from airflow.timetables.base import DataInterval, TimeRestriction

    dag = dagbag.dags["retrain_flights_arr_delay"]
    assert dag.end_date is None
    assert all(task.end_date is None for task in dag.tasks), [t.task_id for t in dag.tasks if t.end_date]
    timetable = dag.timetable.timetable
    now = pendulum.instance(datetime.now(UTC))
    assert timetable.infer_manual_data_interval(run_after=now) == DataInterval.exact(now)
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    last = DataInterval.exact(pendulum.datetime(2013, 3, 11, 3, tz="UTC"))
    assert timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction) is None


def test_a_schedule_without_an_end_is_the_cron_itself(tmp_path) -> None:
    import yaml
    from airflow.timetables.trigger import CronTriggerTimetable

    from retrainer.config import parse_config

    raw = yaml.safe_load((REPO / "projects" / "flights.yaml").read_text())
    raw["schedule"] = {"cron": "0 3 * * 1", "start_date": "2013-01-08", "catchup": False}
    dag = _dag_module().build_dag(tmp_path / "p.yaml", parse_config(raw, REPO / "projects"))
    assert isinstance(dag.timetable.timetable, CronTriggerTimetable) and dag.end_date is None
