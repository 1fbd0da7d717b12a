"""Faults against a real MLflow server and a real trainer process, on the CLI path (``steps``, ``retrainer``).

Each fault is injected at a precise moment of a real cycle: the MLflow server is SIGKILLed while the candidate
is logged, after its version is registered, or right after ``@champion`` moved; the trainer process is
SIGKILLed while its run is open; the champion's artifact is deleted or corrupted; the data root runs out of
space. Each test then checks what every fault must leave: a champion that loads (or none yet), every accepted
batch with its hash, the half-done work recorded where users look, and a rerun that completes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import steps
from retrainer.tracking import Tracking
from retrainer.trusted_models import UntrustedModelError
from tests.helpers import MlflowServer, wait_until

# The serving check (a fresh process per model) has its own tests; these are about what a fault leaves.
pytestmark = [pytest.mark.integration, pytest.mark.faults]

NO_SERVING = {"serving": {"enabled": False}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with pytest.MonkeyPatch.context() as patch:
        # One quick try per request: a dead server fails the step in seconds, not after minutes of retries.
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        patch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        patch.setenv("RETRAINER_CODE_VERSION", "fault-tier")
        mlflow_server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
        mlflow_server.start()
        try:
            yield mlflow_server
        finally:
            mlflow_server.stop()


@pytest.fixture
def mlflow(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracking]:
    """The server, running (a test before may have killed it), as the steps are handed it."""
    from tests.conftest import reset_mlflow

    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    yield Tracking(server.url)
    reset_mlflow()
    server.start()


def _hashes(project: Any) -> dict[str, str]:
    """Every accepted batch's recorded hash, checked against its file's content."""
    records = [r for r in project.catalog.all() if r.status.value == "accepted"]
    for record in records:
        assert hashlib.sha256(Path(record.uri).read_bytes()).hexdigest() == record.sha256, record.batch_id
    return {r.batch_id: r.sha256 for r in records}


def _champion_loads(project: Any, tracking: Tracking) -> str | None:
    """The champion's version after checking it loads as the platform's own model and predicts."""
    from retrainer import modeling

    client = tracking.client()
    champion = steps.champion_version(client, project.config)
    if champion is None:
        return None
    model = steps.load_model(client, project.config, f"models:/{project.config.model_name}/{champion.version}")
    features, _ = modeling.prepare(project.catalog.load(project.catalog.all()[:1]), project.config)
    assert len(modeling.predict_for_metric(model, features, project.config.task)) == len(features)
    return str(champion.version)


def _kill_at(
    monkeypatch: pytest.MonkeyPatch, target: Any, name: str, server: MlflowServer, *, after: bool = False
) -> None:
    """Kill the server the first time ``target.name`` is called: before the call (it then fails as it would
    against a crashed server), or right after it succeeded (``after``: the next call finds it gone)."""
    real = getattr(target, name)

    def killing(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(target, name, real)
        if not after:
            server.kill()
            return real(*args, **kwargs)
        result = real(*args, **kwargs)
        server.kill()
        return result

    monkeypatch.setattr(target, name, killing)


def _runs(tracking: Tracking, project: Any) -> dict[str, list[Any]]:
    client = tracking.client()
    experiment = client.get_experiment_by_name(project.config.name)
    runs = client.search_runs([experiment.experiment_id], "tags.`retrainer.kind` = 'candidate'")
    by_status: dict[str, list[Any]] = {}
    for run in runs:
        by_status.setdefault(run.info.status, []).append(run)
    return by_status


def _project(synthetic_project: Callable[..., Any], name: str, weeks: int = 2, **options: Any) -> Any:
    project = synthetic_project(name, promotion={**NO_SERVING, **options.pop("promotion", {})}, **options)
    project.land_and_accept(range(weeks))
    return project


def _first_champion(project: Any, tracking: Tracking, synth: SimpleNamespace, week: int = 1) -> str:
    cutoff = synth.cutoff_after(week)
    first = steps.train(project.config, tracking, cutoff, "first", max_train_rows=40)
    decision = steps.promote(
        project.config, tracking, first.run_id, steps.evaluate(project.config, tracking, first.run_id)
    )
    assert decision.promoted, decision.reason
    return str(decision.version)


def test_mlflow_killed_while_the_candidate_is_logged_leaves_a_run_the_next_train_closes_as_killed(
    server: MlflowServer,
    mlflow: Tracking,
    synthetic_project: Callable[..., Any],
    synth: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow as mlflow_module

    project = _project(synthetic_project, "killed_while_logging")
    champion = _first_champion(project, mlflow, synth)
    hashes = _hashes(project)
    _kill_at(monkeypatch, mlflow_module, "log_params", server)
    with pytest.raises(Exception, match=r"127\.0\.0\.1|[Cc]onnection"):
        steps.train(project.config, mlflow, synth.cutoff_after(1), "cut_off")
    server.start()
    [left] = _runs(mlflow, project)["RUNNING"]  # the server died before the run could be ended
    assert left.data.tags["retrainer.cycle_id"] == "cut_off"

    # The rerun closes it, saying why, and trains its own candidate, which is judged as usual.
    rerun = steps.train(project.config, mlflow, synth.cutoff_after(1), "cut_off")
    runs = _runs(mlflow, project)
    assert [r.info.run_id for r in runs["KILLED"]] == [left.info.run_id]
    assert (
        runs["KILLED"][0]
        .data.tags["retrainer.failure"]
        .startswith("abandoned: its lease was released before the run ended")
    )
    assert "RUNNING" not in runs and rerun.run_id in {r.info.run_id for r in runs["FINISHED"]}
    steps.promote(project.config, mlflow, rerun.run_id, steps.evaluate(project.config, mlflow, rerun.run_id))
    assert _champion_loads(project, mlflow) in {champion, "2"}
    assert _hashes(project) == hashes


def test_a_trainer_process_killed_while_its_run_is_open_is_closed_as_killed_by_the_next_cycle(
    server: MlflowServer, mlflow: Tracking, synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    # Enough rows that logging the model takes a moment on any machine: the kill lands while the run is open.
    project = _project(synthetic_project, "killed_trainer", estimator="xgboost")
    champion = _first_champion(project, mlflow, synth)
    hashes = _hashes(project)
    client = mlflow.client()
    experiment = client.get_experiment_by_name(project.config.name).experiment_id
    command = [sys.executable, "-m", "retrainer", "train", "--config", str(project.path)]
    command += ["--cutoff", synth.cutoff_after(1).isoformat(), "--cycle-id", "killed"]
    trainer = subprocess.Popen(command, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def open_run() -> Any:
        if trainer.poll() is not None:
            raise AssertionError(
                f"the trainer ended before it was killed: {trainer.stdout.read().decode()[-2000:]}"
            )
        found = client.search_runs(
            [experiment], "tags.`retrainer.cycle_id` = 'killed' and attributes.status = 'RUNNING'"
        )
        return found[0] if found else None

    left = wait_until(open_run, timeout=240, what="the trainer's open candidate run", interval=0.05)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(timeout=30)
    assert client.get_run(left.info.run_id).info.status == "RUNNING"

    rerun = steps.train(project.config, mlflow, synth.cutoff_after(1), "killed")
    closed = client.get_run(left.info.run_id)
    assert closed.info.status == "KILLED"
    assert "is no longer running before the run ended" in closed.data.tags["retrainer.failure"]
    assert client.get_run(rerun.run_id).info.status == "FINISHED"
    assert _champion_loads(project, mlflow) == champion
    assert _hashes(project) == hashes


def test_mlflow_killed_after_the_version_is_registered_is_resumed_and_recorded_by_the_rerun(
    server: MlflowServer,
    mlflow: Tracking,
    synthetic_project: Callable[..., Any],
    synth: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow import MlflowClient

    project = _project(synthetic_project, "killed_at_register", weeks=3)
    champion = _first_champion(project, mlflow, synth)
    hashes = _hashes(project)
    training = steps.train(project.config, mlflow, synth.cutoff_after(2), "second")
    evaluation = steps.evaluate(project.config, mlflow, training.run_id)
    _kill_at(monkeypatch, MlflowClient, "set_model_version_tag", server)  # the version exists, undecided
    with pytest.raises(Exception, match=r"127\.0\.0\.1|[Cc]onnection"):
        steps.promote(project.config, mlflow, training.run_id, evaluation)
    server.start()
    client = mlflow.client()
    [half] = client.search_model_versions(f"name='{project.config.model_name}' and run_id='{training.run_id}'")
    assert "retrainer.decision" not in half.tags
    assert _champion_loads(project, mlflow) == champion  # the champion never moved to an undecided version

    decision = steps.promote(project.config, mlflow, training.run_id, evaluation)
    assert decision.version == str(half.version)  # the same version, not a second one
    assert decision.resumed == (
        f"an earlier attempt registered v{half.version} (its decision was never recorded) and stopped"
    )
    tags = client.get_model_version(project.config.model_name, str(half.version)).tags
    assert tags["retrainer.resumed"] == decision.resumed and tags["retrainer.decision"] == decision.state
    assert len(client.search_model_versions(f"name='{project.config.model_name}'")) == 2
    assert _champion_loads(project, mlflow) == (str(half.version) if decision.promoted else champion)
    assert _hashes(project) == hashes


def test_mlflow_killed_right_after_the_alias_moved_is_completed_once_by_the_rerun(
    server: MlflowServer,
    mlflow: Tracking,
    synthetic_project: Callable[..., Any],
    synth: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow import MlflowClient

    project = _project(synthetic_project, "killed_at_alias", weeks=3)
    champion = _first_champion(project, mlflow, synth)
    hashes = _hashes(project)
    training = steps.train(project.config, mlflow, synth.cutoff_after(2), "second")
    evaluation = steps.evaluate(project.config, mlflow, training.run_id)
    _kill_at(monkeypatch, MlflowClient, "set_registered_model_alias", server, after=True)
    with pytest.raises(Exception, match=r"127\.0\.0\.1|[Cc]onnection"):
        steps.promote(project.config, mlflow, training.run_id, evaluation)
    server.start()
    moved = _champion_loads(project, mlflow)
    assert moved != champion  # the alias had moved; its history and the decision had not been written
    assert [m.to_version for m in steps.alias_history(project.config, mlflow)] == [champion]

    decision = steps.promote(project.config, mlflow, training.run_id, evaluation)
    assert decision.promoted and decision.version == moved
    assert decision.resumed.startswith(f"an earlier attempt registered v{moved} and moved @champion to it")
    moves = steps.alias_history(project.config, mlflow)
    assert [(m.from_version, m.to_version) for m in moves] == [(None, champion), (champion, moved)]
    assert _champion_loads(project, mlflow) == moved
    assert _hashes(project) == hashes


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
def test_a_champion_whose_artifact_is_damaged_is_replaced_by_a_candidate_judged_on_the_floor(
    server: MlflowServer,
    mlflow: Tracking,
    synthetic_project: Callable[..., Any],
    synth: SimpleNamespace,
    damage: str,
) -> None:
    project = _project(synthetic_project, f"champion_{damage}", weeks=3, floor=5.0)
    champion = _first_champion(project, mlflow, synth)
    hashes = _hashes(project)
    client = mlflow.client()
    version = client.get_model_version(project.config.model_name, champion)
    stored = _stored_model_file(server, client, version.run_id)
    if damage == "deleted":
        stored.unlink()
    else:
        stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])  # a truncated upload
    with pytest.raises(UntrustedModelError):
        _champion_loads(project, mlflow)

    # The champion cannot serve: a candidate that clears the floor replaces it, and the decision says why.
    record = steps.run_cycle(project.config, mlflow, synth.cutoff_after(2), f"after_{damage}", force=True)
    decision = record.decision
    assert decision is not None and decision.promoted, record.error or decision.reason
    assert decision.reason.startswith(f"champion v{champion} cannot be loaded (")
    assert "so the candidate is judged on the floors only: replacement: rmse " in decision.reason
    assert record.evaluation.champion_problem and record.evaluation.champion_version == champion
    assert _champion_loads(project, mlflow) == decision.version
    assert [(m.from_version, m.to_version) for m in steps.alias_history(project.config, mlflow)][-1] == (
        champion,
        decision.version,
    )
    assert _hashes(project) == hashes


def _stored_model_file(server: MlflowServer, client: Any, run_id: str) -> Path:
    """The model file of ``run_id``'s logged model in the server's artifact store."""
    tags = client.get_run(run_id).data.tags
    logged = client.get_logged_model(tags["retrainer.model_uri"].removeprefix("models:/"))
    [found] = [p for p in server.artifacts.rglob("model.skops") if logged.model_id in str(p)] or [
        p for p in server.artifacts.rglob("model.skops") if run_id in str(p)
    ]
    return found
