"""Launching the trainer: configuration, the plan every backend runs, the local backend and failures."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import steps, training
from retrainer.catalog import CatalogError
from retrainer.config import ConfigError, ProjectConfig, TrainingBackend, parse_config, parse_memory
from retrainer.tracking import Tracking

TRACKING = Tracking("http://mlflow.invalid:5000")  # for plans that never reach MLflow


def _config(synth: SimpleNamespace, tmp_path: Path, **training_section: Any) -> ProjectConfig:
    document = synth.config_dict()
    if training_section:
        document["training"] = training_section
    return parse_config(document, tmp_path)


# -- configuration ------------------------------------------------------------------------------------------
def test_training_defaults_to_the_local_backend(synth: SimpleNamespace, tmp_path: Path) -> None:
    config = _config(synth, tmp_path)
    assert config.training.backend is TrainingBackend.LOCAL
    assert config.training.memory_bytes == 4 * 1024**3
    assert config.training.device == "cpu"


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 1024**2), ("4g", 4 * 1024**3), ("4Gi", 4 * 1024**3), ("2048Mi", 2 * 1024**3), (2**30, 2**30)],
)
def test_memory_sizes_are_read_as_docker_and_kubernetes_write_them(text: Any, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"memory": "lots"}, "training.memory"),
        ({"memory": "1m"}, "training.memory"),
        ({"backend": "podman"}, "training.backend"),
        ({"cpus": 0}, "training.cpus"),
        ({"device": "tpu"}, "training.device"),
        ({"kubernetes": {"namespce": "ml"}}, "training.kubernetes.namespce"),
    ],
)
def test_a_bad_training_setting_is_named(
    synth: SimpleNamespace, tmp_path: Path, section: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        _config(synth, tmp_path, **section)


def test_cuda_needs_an_xgboost_estimator(synth: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training\.device: cuda needs an xgboost estimator"):
        _config(synth, tmp_path, device="cuda")  # the synthetic project's estimator is a linear model


def test_a_pod_cannot_train_on_a_local_folder_without_a_claim(synth: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training\.kubernetes\.data_volume_claim"):
        _config(synth, tmp_path, backend="kubernetes")
    claimed = _config(synth, tmp_path, backend="kubernetes", kubernetes={"data_volume_claim": "retrainer-data"})
    assert claimed.training.kubernetes.data_volume_claim == "retrainer-data"


# -- the plan -----------------------------------------------------------------------------------------------
def test_the_plan_runs_retrainer_train_with_the_resolved_project(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project()
    project.land_and_accept(range(4))
    cutoff = synth.cutoff_after(3).isoformat()
    # The worker's own MLFLOW_TRACKING_URI is not what the trainer gets: the task's Tracking (its connection) is.
    environ = {"MLFLOW_TRACKING_URI": "http://stale:1", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "HOME": "/root"}
    tracking = Tracking("http://mlflow:5000", "trainer", "pw")
    launch = training.plan(
        project.config, tracking, cutoff, "cycle_1", trigger="drift_alert", max_train_rows=500, environ=environ
    )
    assert launch.command == [
        *("train", "--cutoff", cutoff, "--cycle-id", "cycle_1"),
        *("--trigger", "drift_alert", "--lease", launch.lease, "--max-train-rows", "500"),
    ]
    assert launch.window == [synth.batch_id(w) for w in range(4)]
    # The trainer gets the project as the scheduler resolved it, so it needs no config file.
    assert launch.project() == project.config
    assert launch.environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "HOME" not in launch.environment
    # Credentials travel privately: never in the XCom (the metadata database) nor in the shown environment.
    assert launch.secrets == {
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "MLFLOW_TRACKING_USERNAME": "trainer",
        "MLFLOW_TRACKING_PASSWORD": "pw",
    }
    assert "s3cr3t" not in json.dumps(launch.to_xcom()) and "pw" not in json.dumps(launch.to_xcom()["command"])
    restored = training.TrainerLaunch.from_xcom(launch.to_xcom(), tracking, environ=environ)
    assert restored == launch
    # A pod's launch carries no worker credentials at all (they come from a Kubernetes Secret).
    assert training.TrainerLaunch.from_xcom(launch.to_xcom(), environ={}).secrets == {}
    assert launch.command_with_result("/tmp/r.json")[-2:] == ["--result-file", "/tmp/r.json"]


def test_the_plan_refuses_before_any_trainer_starts(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    project = synthetic_project()
    with pytest.raises(CatalogError, match="no accepted batch ended by"):
        training.plan(project.config, TRACKING, synth.cutoff_after(3).isoformat(), "c", trigger="manual")
    project.land_and_accept(range(4))
    with pytest.raises(steps.NothingToTrainError, match="no new accepted batch"):
        training.plan(
            project.config, TRACKING, synth.cutoff_after(3).isoformat(), "c", trigger="manual", require_new_data=[]
        )


# -- results and failures -----------------------------------------------------------------------------------
def test_a_result_without_a_run_id_is_an_error() -> None:
    result = {
        "run_id": "abc",
        "model_uri": "models:/m-1",
        "window": ["w1"],
        "holdout_start": "2024-01-01T00:00:00+00:00",
        "train_rows": 10,
        "holdout_rows": 2,
        "train_metrics": {"rmse": 1.0},
    }
    assert training.read_result(json.dumps(result), "f").run_id == "abc"
    assert training.read_result(result, "f").window == ["w1"]
    for text, message in (
        (None, "wrote no result to f"),
        ("{oops", "not JSON"),
        ('{"x": 1}', "has no run_id"),
        ('{"run_id": "abc"}', "incomplete"),
    ):
        with pytest.raises(training.TrainerFailedError, match=message):
            training.read_result(text, "f")


def test_the_failure_message_says_out_of_memory_and_shows_the_last_lines() -> None:
    tail = [f"line {i}" for i in range(50)]
    message = training.failure_message(137, tail, where="container t:1", oom_killed=True, memory="256m")
    assert "killed for memory (exit code 137, limit 256m)" in message
    assert "no model was registered" in message
    assert "| line 49" in message and "| line 19" not in message  # the last 30 lines
    assert "exited with code 3" in training.failure_message(3, [], where="x")
    assert "(no output)" in training.failure_message(3, [], where="x")
    # Lines as an engine sends them: bytes with their line ends.
    assert training.failure_message(1, [b"a\n", "b\n"], where="x").endswith("  | a\n  | b")


@pytest.fixture
def trainable(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace, tracking: Tracking
) -> SimpleNamespace:
    project = synthetic_project()
    project.land_and_accept(range(4))
    return SimpleNamespace(project=project, cutoff=synth.cutoff_after(3).isoformat(), tracking=tracking)


@pytest.mark.parametrize("start", ["exec", "fork"])
def test_the_local_backend_trains_in_a_subprocess_and_records_where(
    trainable: SimpleNamespace, start: str, capfd: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    launch = training.plan(
        trainable.project.config, trainable.tracking, trainable.cutoff, "cycle_local", trigger="scheduled"
    )
    lines: list[str] = []
    started: list[Any] = []
    result = training.run_local(launch, timeout_s=300, log_line=lines.append, on_start=started.append, start=start)
    assert any(result.run_id in line for line in lines), "what the trainer prints goes to the task log"
    assert started and started[0].returncode == 0  # the operator's on_kill gets the process
    printed = capfd.readouterr()
    assert result.run_id not in printed.out + printed.err, "nothing of it on the launcher's own streams"
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["retrainer.training_backend"] == "local"
    assert run.data.tags["retrainer.trigger"] == "scheduled"
    assert run.data.tags["retrainer.cycle_id"] == "cycle_local"
    assert result.window == launch.window


def test_the_launcher_holds_the_trainers_lease_while_it_runs(trainable: SimpleNamespace) -> None:
    """A trainer in a container sees the data root read-only: its launcher holds the lease of its run."""
    import mlflow

    from retrainer import locks

    config = trainable.project.config
    launch = training.plan(config, trainable.tracking, trainable.cutoff, "cycle_leased", trigger="manual")
    lease_uri = training.training_lease(config, launch.lease)
    seen: list[str | None] = []
    result = training.run_local(launch, timeout_s=300, on_start=lambda _: seen.append(locks.abandoned(lease_uri)))
    assert seen == [None], "the lease is held while the trainer runs"
    assert locks.abandoned(lease_uri) == "its lease was released"
    assert mlflow.get_run(result.run_id).data.tags[training.LEASE_TAG] == launch.lease


@pytest.mark.parametrize("start", ["exec", "fork"])
def test_a_failing_trainer_reports_its_exit_code_and_last_lines(
    trainable: SimpleNamespace, synth: SimpleNamespace, tmp_path: Path, start: str
) -> None:
    launch = training.plan(
        trainable.project.config, trainable.tracking, trainable.cutoff, "cycle_bad", trigger="manual"
    )
    broken = launch.project().model_dump(mode="json", by_alias=True)
    broken["estimator"] = {"class": "sklearn.linear_model.NoSuchRegressor"}
    launch = training.TrainerLaunch(
        launch.command, {**launch.environment, training.CONFIG_ENV: json.dumps(broken)}, {}, launch.window, "c"
    )
    with pytest.raises(training.TrainerFailedError) as failed:
        training.run_local(launch, timeout_s=300, start=start)
    assert failed.value.exit_code == 1
    assert "exited with code 1" in str(failed.value)
    assert "NoSuchRegressor" in str(failed.value)  # the trainer's own error line, from its output


@pytest.mark.parametrize("start", ["exec", "fork"])
def test_a_trainer_past_its_timeout_is_killed(trainable: SimpleNamespace, start: str) -> None:
    launch = training.plan(
        trainable.project.config, trainable.tracking, trainable.cutoff, "cycle_slow", trigger="manual"
    )
    with pytest.raises(training.TrainerFailedError, match="timeout") as failed:
        training.run_local(launch, timeout_s=0.5 if start == "exec" else 0.05, start=start)
    assert failed.value.exit_code == -9


def test_a_killed_trainers_run_is_closed_and_its_batches_stay_new(trainable: SimpleNamespace) -> None:
    import mlflow

    config = trainable.project.config
    window = trainable.project.landed
    mlflow.set_experiment(config.name)
    # What a trainer killed mid-run leaves behind: a candidate run that never finished, without a model.
    run = mlflow.start_run(run_name="killed")
    mlflow.set_tags(
        {"retrainer.kind": "candidate", "retrainer.cycle_id": "c9", "retrainer.window": json.dumps(window)}
    )
    mlflow.end_run(status="RUNNING")
    assert mlflow.get_run(run.info.run_id).info.status == "RUNNING"
    assert steps.untrained_batches(config, trainable.tracking, trainable.cutoff) == window

    closed = training.close_abandoned_runs(config, trainable.tracking, "c9", "killed for memory")
    assert closed == [run.info.run_id]
    killed = mlflow.get_run(run.info.run_id)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["retrainer.failure"] == "killed for memory"
    assert training.close_abandoned_runs(config, trainable.tracking, "other_cycle", "x") == []
    assert steps.untrained_batches(config, trainable.tracking, trainable.cutoff) == window


def test_an_image_digest_learnt_after_the_start_is_recorded_on_the_run(trainable: SimpleNamespace) -> None:
    import mlflow

    mlflow.set_experiment(trainable.project.config.name)
    with mlflow.start_run() as run:
        mlflow.set_tag("retrainer.trainer_image_id", "registry.example/trainer:7")  # what the pod was told
    training.record_image_id(trainable.tracking, run.info.run_id, "registry.example/trainer@sha256:0123")
    assert mlflow.get_run(run.info.run_id).data.tags["retrainer.trainer_image_id"].endswith("@sha256:0123")


def test_provenance_defaults_to_in_process() -> None:
    assert training.provenance({}) == {
        "training_backend": "in_process",
        "trainer_image": "",
        "trainer_image_id": "",
    }
    env = {training.BACKEND_ENV: "docker", training.IMAGE_ENV: "t:1", training.IMAGE_ID_ENV: "sha256:ab"}
    assert training.provenance(env) == {
        "training_backend": "docker",
        "trainer_image": "t:1",
        "trainer_image_id": "sha256:ab",
    }


def test_cuda_trains_xgboost_on_the_gpu_and_leaves_a_model_that_predicts_on_the_cpu(
    synth: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from retrainer import modeling

    document = synth.config_dict(estimator="xgboost")
    document["training"] = {"device": "cuda"}
    config = parse_config(document, tmp_path)
    devices: list[str] = []
    build = modeling.build_pipeline

    def spy(config: ProjectConfig, overrides: dict[str, Any] | None = None) -> Any:
        pipeline = build(config, overrides)
        devices.append(pipeline.named_steps["estimator"].get_params()["device"])
        return pipeline

    monkeypatch.setattr(modeling, "build_pipeline", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = modeling.fit_on_device(synth.week(1, 200), config)
    assert devices == ["cuda"]
    if shutil.which("nvidia-smi") is None:
        # No GPU here: xgboost says so, trains on the CPU, and the fit records where it really trained.
        assert any("GPU" in str(warning.message) for warning in caught)
        assert fitted.device == "cpu"
    else:
        assert fitted.device.startswith("cuda")
    assert fitted.pipeline.named_steps["estimator"].get_params()["device"] == "cpu"
    assert len(fitted.pipeline.predict(synth.week(2, 20))) == 20


def test_each_try_of_the_train_task_holds_a_lease_of_its_own() -> None:
    command = training.trainer_command("2024-02-05T03:00:00+00:00", "c1", trigger="scheduled", lease="ab12")
    launch = training.TrainerLaunch(command, {}, {}, ["2024-01-29"], "c1", "ab12")
    second = launch.for_try(2)
    assert second.lease == "ab12-try2"
    assert second.command[second.command.index("--lease") + 1] == "ab12-try2"
    assert launch.for_try(2).for_try(3).lease == "ab12-try3"  # from the plan's lease, not stacked
    assert launch.for_try(0) is launch  # no task context: the plan's lease
    assert training.lease_try("ab12-try3") == 3 and training.plan_lease("ab12-try3") == "ab12"
    assert training.lease_try("ab12") == 0
    unleased = training.TrainerLaunch(["train"], {}, {}, [], "c1")
    assert unleased.for_try(2) is unleased


def test_a_retry_trains_although_the_stopped_try_still_holds_its_lease(trainable: SimpleNamespace) -> None:
    """Airflow stopped try 1 (its heartbeat refused): its launcher, cut off on another worker, still holds the
    lease and its run is open. Try 2 must not wait for it, and closes try 1's run as KILLED, saying why."""
    import mlflow

    config = trainable.project.config
    launch = training.plan(config, trainable.tracking, trainable.cutoff, "cycle_retried", trigger="scheduled")
    first = launch.for_try(1)
    held_elsewhere = {
        "owner": "trainer subprocess of cycle cycle_retried on worker-2 (pid 4242)",
        "token": "t",
        "expires_at": "2999-01-01T00:00:00+00:00",
        "host": "worker-2",
        "pid": 4242,
    }
    from retrainer import storage

    storage.write_bytes(training.training_lease(config, first.lease), json.dumps(held_elsewhere).encode())
    mlflow.set_experiment(config.name)
    with mlflow.start_run(run_name="try 1") as stopped:
        mlflow.set_tags(
            {"retrainer.kind": "candidate", "retrainer.cycle_id": "cycle_retried", training.LEASE_TAG: first.lease}
        )
    mlflow.MlflowClient().set_terminated(stopped.info.run_id, status="RUNNING")
    # Another project cycle's open run with a lease held elsewhere is left alone.
    with mlflow.start_run(run_name="other") as other:
        mlflow.set_tags({"retrainer.kind": "candidate", training.LEASE_TAG: "ffff-try1"})
    storage.write_bytes(training.training_lease(config, "ffff-try1"), json.dumps(held_elsewhere).encode())
    mlflow.MlflowClient().set_terminated(other.info.run_id, status="RUNNING")

    result = training.run_local(launch.for_try(2), timeout_s=300)

    assert mlflow.get_run(result.run_id).data.tags[training.LEASE_TAG] == f"{launch.lease}-try2"
    closed = mlflow.get_run(stopped.info.run_id)
    assert closed.info.status == "KILLED"
    assert "try 1 of its task was stopped (try 2 started)" in closed.data.tags["retrainer.failure"]
    assert mlflow.get_run(other.info.run_id).info.status == "RUNNING"


def test_the_local_trainer_dies_with_its_launcher(tmp_path: Path) -> None:
    """A launcher killed outright (SIGKILL) cannot stop its trainer: the kernel does (PR_SET_PDEATHSIG)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import wait_until

    pid_file = tmp_path / "trainer.pid"
    trainer = tmp_path / "trainer"  # stands in for the interpreter: records its pid and trains for ever
    trainer.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    trainer.chmod(0o755)
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from retrainer import training\n"
            "training.run_local(training.TrainerLaunch(['train'], {}), timeout_s=600, "
            f"python={str(trainer)!r})",
        ]
    )
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=60, what="the trainer")
        trainer_pid = int(pid_file.read_text())
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        wait_until(lambda: _gone(trainer_pid), timeout=30, what="the trainer to die with its launcher")
    finally:
        launcher.kill()


def test_a_forked_trainer_dies_with_its_launcher(tmp_path: Path) -> None:
    """The forked trainer too: the launcher killed outright takes its trainer with it."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import wait_until

    pid_file = tmp_path / "trainer.pid"
    # The command the fork runs stands in for training: it records its pid and trains for ever.
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\n"
            "import retrainer.cli\n"
            "from retrainer import training\n"
            "def train_for_ever(**_):\n"
            f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
            "    time.sleep(600)\n"
            "retrainer.cli.app = train_for_ever\n"
            "training.run_local(training.TrainerLaunch(['train'], {}), timeout_s=600, start='fork')",
        ]
    )
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=60, what="the trainer")
        trainer_pid = int(pid_file.read_text())
        assert trainer_pid != launcher.pid
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        wait_until(lambda: _gone(trainer_pid), timeout=30, what="the forked trainer to die with its launcher")
    finally:
        launcher.kill()


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie until init reaps it: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True
