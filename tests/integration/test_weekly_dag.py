"""The weekly DAG end to end, through the real Airflow scheduler and a real MLflow server.

A real stack (api-server, scheduler, dag-processor, triggerer, MLflow server) runs on free ports in a temporary
folder, with the repo's dags/ and plugins/, a project file that points at a temporary data folder, and a copy of
the Great Expectations context. Real demo weeks are landed (week 4 corrupted), then four manual runs walk
through the promotion gate:

1. a deliberately weak first model (300 training rows) becomes the champion;
2. a full candidate beats it and is promoted;
3. a weak candidate (300 rows) is rejected and the champion stays;
4. the corrupted week is quarantined with its report, the run fails before training, nothing changes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from retrainer import demo, storage
from retrainer.airflow_api import AirflowClient
from retrainer.catalog import BatchStatus, Catalog
from retrainer.config import load_config
from retrainer.history import read_history
from retrainer.stack import REPO_ROOT, StackStatus

from .conftest import project_stack, write_manual_project

pytestmark = pytest.mark.integration

PROJECT = "it_flights"
DAG_ID = f"retrain_{PROJECT}"
MODEL = "it_flights_arr_delay"
WEEKS = demo.week_starts(demo.DEMO_START, 4)
CORRUPT_WEEK = 4


# Two more projects in the same deployment whose promotions need a reviewer: one is approved, one rejected.
REVIEWED = ("it_approved", "it_rejected")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weekly")
    path = write_manual_project(root, PROJECT, MODEL)
    shutil.copytree(REPO_ROOT / "great_expectations", root / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    demo.land_weeks(load_config(path), WEEKS[0], len(WEEKS), corrupt_weeks=(CORRUPT_WEEK,))
    for name in REVIEWED:
        raw = yaml.safe_load(path.read_text())
        raw.update(name=name, registered_model=f"{name}_model")
        raw["data"]["root_uri"] = str(root / f"data_{name}")
        raw["promotion"].update(approval="required", approval_timeout_minutes=30)
        reviewed = path.parent / f"{name}.yaml"
        reviewed.write_text(yaml.safe_dump(raw, sort_keys=False))
        demo.land_weeks(load_config(reviewed), WEEKS[0], 1)
    return path


@pytest.fixture(scope="module")
def stack(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackStatus]:
    with project_stack(tmp_path_factory, project.parent, project.parent.parent / "gx") as status:
        yield status


@pytest.fixture(scope="module")
def client(stack: StackStatus) -> Iterator[AirflowClient]:
    with AirflowClient(stack.airflow_api_url, stack.username, stack.password or "", poll_interval=1.0) as api:
        api.wait_until_dag_parsed(DAG_ID, timeout=180)
        api.unpause(DAG_ID)
        yield api


@pytest.fixture(scope="module")
def registry(stack: StackStatus, monkeypatch_module: pytest.MonkeyPatch) -> Any:
    from mlflow import MlflowClient

    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
    return MlflowClient(tracking_uri=stack.mlflow_url)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _run_week(client: AirflowClient, week: int, **conf: Any) -> tuple[str, dict[str, Any]]:
    cutoff = demo.week_cutoff(WEEKS[week - 1]).isoformat()
    # At "now", as the trigger form starts it, although the project's schedule ended in 2013.
    run_id = client.trigger(DAG_ID, conf={"cutoff": cutoff, **conf}, logical_date=datetime.now(UTC))
    started = time.monotonic()
    run = client.wait_for_dag_run(DAG_ID, run_id, timeout=600)
    print(f"week {week}: {run['state']} in {time.monotonic() - started:.0f} s")
    return run_id, run


def _tasks(client: AirflowClient, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run_id)}


def _champion(registry: Any) -> Any:
    return registry.get_model_version_by_alias(MODEL, "champion")


def _note(client: AirflowClient, run_id: str) -> str:
    """The run's note, as the run's page shows it."""
    return client.get_dag_run(DAG_ID, run_id).get("note") or ""


def _opens(client: AirflowClient, url: str | None) -> str:
    """The page behind a link the Airflow UI shows (a path of the API server), as the signed-in user."""
    assert url and url.startswith("/retrainer/"), url
    return client.get_page(url).text


def test_first_cycle_creates_a_champion(client: AirflowClient, registry: Any) -> None:
    run_id, run = _run_week(client, 1, max_train_rows=300)
    assert run["state"] == "success", _tasks(client, run_id)
    champion = _champion(registry)
    assert champion.version == "1"
    assert champion.tags["retrainer.decision"] == "promoted"
    assert "first model" in champion.tags["retrainer.reason"]
    decision = client.xcom(DAG_ID, run_id, "promote")
    assert decision["verdict"] == "promoted" and decision["version"] == "1"
    candidate_run = registry.get_run(champion.run_id)
    assert candidate_run.data.tags["retrainer.trigger"] == "manual"
    assert json.loads(candidate_run.data.tags["retrainer.window"]) == [WEEKS[0].isoformat()]
    # The run says what it decided, and the grid shows it: @champion moved.
    assert _note(client, run_id).startswith("promoted v1: rmse ")
    assert _tasks(client, run_id)["champion_moved"] == "success"


def test_better_candidate_is_promoted(client: AirflowClient, registry: Any) -> None:
    run_id, run = _run_week(client, 2)
    assert run["state"] == "success", _tasks(client, run_id)
    champion = _champion(registry)
    assert champion.version == "2"
    assert champion.tags["retrainer.decision"] == "promoted"
    assert champion.tags["retrainer.previous_champion"] == "1"
    evaluation = client.xcom(DAG_ID, run_id, "evaluate")
    assert evaluation["champion_version"] == "1"
    assert evaluation["candidate"] < evaluation["champion"]  # RMSE: lower is better
    drift = client.xcom(DAG_ID, run_id, "drift")
    assert drift["status"] == "computed" and 0 <= drift["share_drifted"] <= 1
    assert drift["reference_version"] == "1"
    scores = f"rmse {evaluation['candidate']:.4g} vs {evaluation['champion']:.4g} of v1"
    note = _note(client, run_id)
    assert note.startswith(f"promoted v2: {scores} (-")
    assert f"/#/models/{MODEL}/versions/2)" in note and "why: " in note
    # Extra links: promote -> the version in MLflow, drift -> the Evidently report, validate -> Data Docs.
    links = {task: client.extra_links(DAG_ID, run_id, task) for task in ("promote", "drift", "validate")}
    assert links["promote"]["MLflow model version"].endswith(f"/#/models/{MODEL}/versions/2")
    report = _opens(client, links["drift"]["Evidently drift report"])
    assert f"Drift of batch {WEEKS[1].isoformat()} (" in report and f"training data of {MODEL} v1 (" in report
    assert WEEKS[1].isoformat() in _opens(client, links["validate"]["Data Docs"])
    # The logs read cleanly: no flood of third-party warnings (the evaluate log had 1,161, skops looking SciPy's
    # ufuncs up in Airflow's deprecated modules).
    for task in ("ingest", "validate", "drift", "train", "evaluate", "promote"):
        entries = [e for e in client.task_log_entries(DAG_ID, run_id, task) if isinstance(e, dict)]
        warned = [str(e.get("event"))[:200] for e in entries if e.get("logger") == "py.warnings"]
        assert len(warned) <= 2, (task, len(warned), warned[:3])


def test_worse_candidate_is_rejected_and_champion_stays(client: AirflowClient, registry: Any) -> None:
    run_id, run = _run_week(client, 3, max_train_rows=300)
    assert run["state"] == "success", _tasks(client, run_id)
    assert _champion(registry).version == "2"
    rejected = registry.get_model_version(MODEL, "3")
    assert rejected.tags["retrainer.decision"] == "rejected"
    assert "does not clear the required" in rejected.tags["retrainer.reason"]
    assert "champion" not in (rejected.aliases or [])
    artifact = registry.download_artifacts(rejected.run_id, "decision/decision.json")
    assert json.loads(Path(artifact).read_text())["verdict"] == "rejected"
    # Green like a promotion, but its note and the grid say the champion stayed.
    assert _note(client, run_id).startswith("rejected v3: rmse ")
    assert _tasks(client, run_id)["champion_moved"] == "skipped"


def test_corrupted_batch_is_quarantined_and_nothing_changes(
    client: AirflowClient, registry: Any, project: Path
) -> None:
    versions_before = {v.version for v in registry.search_model_versions(f"name='{MODEL}'")}
    run_id, run = _run_week(client, CORRUPT_WEEK)
    assert run["state"] == "failed"
    tasks = _tasks(client, run_id)
    assert tasks["validate"] == "failed"
    assert tasks["train"] == "upstream_failed" and tasks["promote"] == "upstream_failed"
    assert tasks["record"] == "success"
    assert tasks["watcher"] == "failed"
    log = client.task_log(DAG_ID, run_id, "validate")
    assert "expect_column_values_to_be_in_set(origin)" in log
    # An expected outcome: the reason once, then one line saying what follows; no traceback, no retry.
    entries = [e for e in client.task_log_entries(DAG_ID, run_id, "validate") if isinstance(e, dict)]
    assert not [e for e in entries if e.get("error_detail")], "a quarantine is no crash: no traceback"
    [exited] = [e for e in entries if e.get("event") == "Task exited"]
    assert "nothing trained, the champion stays" in str(exited.get("exit_code"))
    assert sum("FAILED 2/" in str(e.get("event")) or "FAILED 1/" in str(e.get("event")) for e in entries) == 1
    assert client.get_dag_run(DAG_ID, run_id) and _tasks(client, run_id)["validate"] == "failed"

    assert _champion(registry).version == "2"
    assert {v.version for v in registry.search_model_versions(f"name='{MODEL}'")} == versions_before

    config = load_config(project)
    catalog = Catalog(config)
    batch = WEEKS[CORRUPT_WEEK - 1].isoformat()
    record = catalog.get(batch)
    assert record.status is BatchStatus.QUARANTINED
    assert not storage.exists(storage.join(catalog.landing, f"{batch}.parquet"))
    kept = storage.read_bytes(storage.join(catalog.quarantine, batch, f"{batch}.parquet"))
    assert storage.sha256_bytes(kept) == record.sha256  # moved, not lost
    report = json.loads(storage.read_bytes(storage.join(catalog.quarantine, batch, "validation.json")))
    assert report["success"] is False
    assert any(f["expectation_type"] == "expect_column_values_to_be_in_set" for f in report["failed"])
    note = _note(client, run_id)
    assert note.startswith(f"quarantined {batch}: ") and "expectations failed" in note.splitlines()[0]
    assert tasks["champion_moved"] == "upstream_failed"
    docs = _opens(client, client.extra_links(DAG_ID, run_id, "validate")["Data Docs"])  # the failed validation
    assert batch in docs and "Unsuccessful Expectations" in docs and "https://cdn" not in docs  # reads offline


def test_a_reviewer_approves_one_promotion_and_rejects_another_in_the_airflow_api(
    client: AirflowClient, registry: Any, stack: StackStatus
) -> None:
    """Both runs wait in ``approve`` (awaiting_input) with the gate's decision; the answers decide the alias."""
    user = stack.username
    cutoff = demo.week_cutoff(WEEKS[0]).isoformat()
    runs = {}
    for name in REVIEWED:
        client.wait_until_dag_parsed(f"retrain_{name}", timeout=180)
        client.unpause(f"retrain_{name}")
        runs[name] = client.trigger(f"retrain_{name}", conf={"cutoff": cutoff, "max_train_rows": 300})
    for name, answer in zip(REVIEWED, ("Approve", "Reject"), strict=True):
        dag_id, run_id = f"retrain_{name}", runs[name]
        waiting = client.wait_for_task_state(dag_id, run_id, "approve", {"awaiting_input"}, timeout=600)
        assert waiting["state"] == "awaiting_input"
        decision = client.xcom(dag_id, run_id, "promote")
        assert decision["awaiting_approval"] and decision["version"] == "1", decision
        assert registry.get_model_version(f"{name}_model", "1").tags["retrainer.decision"] == "awaiting_approval"
        assert not registry.get_registered_model(f"{name}_model").aliases  # nothing moved while waiting
        client.respond(dag_id, run_id, "approve", [answer], {"comment": f"{answer.lower()} in test"})
    for name in REVIEWED:
        dag_id, run_id = f"retrain_{name}", runs[name]
        run = client.wait_for_dag_run(dag_id, run_id, timeout=600)
        tasks = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}
        assert run["state"] == "success", tasks
        assert tasks["approve"] == tasks["conclude_approval"] == tasks["record"] == "success"
        concluded = client.xcom(dag_id, run_id, "conclude_approval")
        assert concluded["approval"]["by"] == user and not concluded["approval"]["timed_out"]

    approved, rejected = REVIEWED
    champion = registry.get_model_version_by_alias(f"{approved}_model", "champion")
    assert champion.version == "1" and champion.tags["retrainer.approved_by"] == user
    assert champion.tags["retrainer.reason"].startswith(f"approved by {user} at ")
    assert '("approve in test")' in champion.tags["retrainer.reason"]
    [move] = read_history(registry, f"{approved}_model")
    assert (move.action, move.by, move.to_version) == ("approval", user, "1")

    assert not registry.get_registered_model(f"{rejected}_model").aliases
    version = registry.get_model_version(f"{rejected}_model", "1")
    assert version.tags["retrainer.decision"] == "rejected" and version.tags["retrainer.rejected_by"] == user
    assert version.tags["retrainer.reason"].startswith(f"rejected by {user} at ")


# -- what a new user sees, in a real browser ---------------------------------------------------------------------
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"  # referenced from the README: what users get before installing


def _finished_runs(client: AirflowClient) -> list[dict[str, Any]]:
    """The finished runs of the cycle; one is run first if there is none (this test needs no other test)."""
    runs = [r for r in client.list_dag_runs(DAG_ID) if r["state"] in ("success", "failed")]
    if not runs:
        _run_week(client, 1, max_train_rows=300)
        runs = [r for r in client.list_dag_runs(DAG_ID) if r["state"] in ("success", "failed")]
    return runs


def test_a_new_user_answers_from_the_airflow_ui_which_model_serves_since_when_why_and_what_happened(
    client: AirflowClient, registry: Any, stack: StackStatus
) -> None:
    """Log in to Airflow, open the retraining DAG's Model tab: the champion, since when and why; one timeline row
    per cycle with its decision, and every link opens; a run's page says what it decided; promote's extra link
    lands on the model version in MLflow."""
    from playwright.sync_api import expect

    from .browser import browser_page, log_in

    runs = _finished_runs(client)
    timeline = client.get_page(f"/retrainer/models/{PROJECT}/timeline.json").json()
    champion = _champion(registry)
    assert timeline["champion"]["version"] == str(champion.version)
    ui = stack.airflow_url
    mlflow_login = {"username": stack.mlflow_username, "password": stack.mlflow_password or ""}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with browser_page(http_credentials=mlflow_login) as page:
        # Not signed in: the model page sends the browser to Airflow's login first.
        page.goto(f"{ui}/retrainer/models/{PROJECT}")
        assert "/auth/login" in page.url
        log_in(page, ui, stack.username, stack.password or "")

        page.goto(f"{ui}/dags/{DAG_ID}/plugin/retrainer-model")  # the DAG's "Model" tab
        model = page.frame_locator("iframe")
        expect(model.locator("#champion .big")).to_contain_text(f"v{champion.version} serves now, since ")
        expect(model.locator("#champion")).to_contain_text(timeline["champion"]["reason"][:60])
        rows = model.locator("#cycles tbody tr")
        expect(rows).to_have_count(len(timeline["cycles"]))
        for cycle in timeline["cycles"]:
            row = model.locator(f'#cycles tr[data-cycle="{cycle["cycle_id"]}"]').first
            expect(row.locator(".badge")).to_have_text(cycle["decision"])
        assert len(timeline["cycles"]) >= len(runs)  # every finished run has its row

        # Every link of the timeline opens: the Airflow runs and the reports as this user, the versions in MLflow.
        hrefs = model.locator("#cycles a.airflow-run, #cycles a.drift-report, #cycles a.data-docs, #quarantined a")
        targets = {hrefs.nth(i).get_attribute("href") for i in range(hrefs.count())}
        assert any("/runs/" in t for t in targets) and any("/files/" in t for t in targets), targets
        for target in targets:
            assert page.request.get(f"{ui}{target}").status == 200, target
        versions = model.locator("#cycles a.model-version")
        for i in range(versions.count()):
            number = versions.nth(i).get_attribute("href").rsplit("/", 1)[-1]
            assert str(registry.get_model_version(MODEL, number).version) == number
        # Inside Airflow's sandboxed frame, a report opens in a new tab, as it says.
        with page.context.expect_page() as opened:
            model.locator("#cycles a.drift-report").first.click()
        expect(opened.value.locator("#retrainer-title")).to_contain_text("Drift of batch ")
        opened.value.close()
        page.goto(f"{ui}/retrainer/models/{PROJECT}")
        page.screenshot(path=str(SCREENSHOTS / "model-page.png"), full_page=True)

        # A run says what it decided: open the newest promotion from its timeline row.
        promoted = next(c for c in timeline["cycles"] if c["decision_kind"] == "promoted")
        note = _note(client, unquote(promoted["airflow_url"].rsplit("/runs/", 1)[1]))
        page.goto(f"{ui}/dags/{DAG_ID}/plugin/retrainer-model")
        page.frame_locator("iframe").locator(f'tr[data-cycle="{promoted["cycle_id"]}"] a.airflow-run').click()
        expect(page.get_by_text(note.splitlines()[0][:40])).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / "run-page.png"))

        # promote's extra link (the task's Details) lands on the version in MLflow.
        page.goto(f"{ui}{promoted['airflow_url']}/tasks/promote/details")
        link = page.get_by_role("link", name="MLflow model version")
        assert link.get_attribute("href").endswith(f"/#/models/{MODEL}/versions/{promoted['version']}")
        with page.context.expect_page() as opened:
            link.click()
        version_page = opened.value
        expect(version_page.get_by_text(f"Version {promoted['version']}").first).to_be_visible()


def test_the_model_pages_refuse_who_is_not_signed_in(stack: StackStatus) -> None:
    import httpx

    for path in (f"/retrainer/models/{PROJECT}", f"/retrainer/models/{PROJECT}/timeline.json", "/retrainer/"):
        assert httpx.get(f"{stack.airflow_api_url}{path}", timeout=30).status_code == 401, path
    response = httpx.get(f"{stack.airflow_api_url}/retrainer/", headers={"Authorization": "Bearer forged"})
    assert response.status_code in (401, 403)
