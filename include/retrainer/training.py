"""Launching the train step on a backend: the trainer's command, environment and result, whatever runs it.

Every backend (``local`` subprocess, ``docker`` container, ``kubernetes`` pod) runs the same command,
``retrainer train --cutoff ... --cycle-id ... --result-file ...``, with the resolved project configuration in
``RETRAINER_CONFIG_JSON`` (so no config file has to be mounted). The trainer reads the window's batches itself
and logs the candidate to MLflow; only its result (the MLflow run id and a summary, never data) comes back,
through the result file. This module does not import Airflow: the operators in ``plugins/`` use it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import secrets as secrets_module
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from retrainer.config import ProjectConfig, TrainingBackend

if TYPE_CHECKING:
    from retrainer.steps.candidate import TrainingResult
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)

CONFIG_ENV = "RETRAINER_CONFIG_JSON"
BACKEND_ENV = "RETRAINER_LAUNCH_BACKEND"
IMAGE_ENV = "RETRAINER_LAUNCH_IMAGE"
IMAGE_ID_ENV = "RETRAINER_LAUNCH_IMAGE_ID"
# Where a container writes its result; a Kubernetes pod writes it where the XCom sidecar reads it.
CONTAINER_RESULT_PATH = "/tmp/retrainer-result.json"
POD_RESULT_PATH = "/airflow/xcom/return.json"
# S3 settings the trainer needs, passed through from the worker when set there. MLflow's come from the
# task's Tracking (the mlflow_default connection), never from the worker's environment.
PASSTHROUGH_ENV = (
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
TAIL_LINES = 30


class TrainerFailedError(RuntimeError):
    """The trainer exited non-zero or was killed; the message carries its exit code and last log lines."""

    def __init__(self, message: str, exit_code: int | None, tail: list[str]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.tail = tail


@dataclass(frozen=True)
class TrainerLaunch:
    """What every backend needs to start one trainer.

    Attributes:
        command: Arguments of the ``retrainer`` entrypoint (the image's entrypoint; ``python -m retrainer``
            for the local backend), without the result file, which depends on the backend.
        environment: Environment of the trainer that may be shown in logs and UIs.
        secrets: Environment of the trainer that must not be shown (credentials).
        window: Batch ids the candidate will train on.
        cycle_id: The cycle, whose unfinished candidate runs are closed if the trainer dies.
        lease: The training lease its launcher holds while the trainer runs (:func:`launcher_lease`), passed to
            the trainer as ``--lease``; empty for a trainer that holds its own. The plan names one per cycle;
            each try of the train task holds its own (:meth:`for_try`).
    """

    command: list[str]
    environment: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)
    window: list[str] = field(default_factory=list)
    cycle_id: str = ""
    lease: str = ""

    def for_try(self, try_number: int) -> TrainerLaunch:
        """This launch for one try of its task: the plan's lease with the try number (``<lease>-try2``).

        A try that Airflow stopped may leave its lease held (its launcher killed before releasing it, or cut off
        from the store); the next try must not wait on it, and its trainer closes the earlier tries' runs
        (:func:`close_abandoned_candidates`). Try 0 (no task context) keeps the plan's lease.
        """
        if not self.lease or try_number < 1:
            return self
        lease = f"{plan_lease(self.lease)}{TRY_MARK}{try_number}"
        command = list(self.command)
        command[command.index("--lease") + 1] = lease
        return dataclasses.replace(self, command=command, lease=lease)

    def command_with_result(self, result_path: str) -> list[str]:
        """The command, writing its result to ``result_path``."""
        return [*self.command, "--result-file", result_path]

    def to_xcom(self) -> dict[str, Any]:
        """A JSON-safe form without the secrets (XCom is stored in the metadata database)."""
        return {
            "command": self.command,
            "environment": self.environment,
            "window": self.window,
            "cycle_id": self.cycle_id,
            "lease": self.lease,
        }

    @classmethod
    def from_xcom(
        cls, value: dict[str, Any], tracking: Tracking | None = None, environ: dict[str, str] | None = None
    ) -> TrainerLaunch:
        """The launch planned by another task, with the credentials of the task that starts the trainer.

        Args:
            value: What ``to_xcom`` returned.
            tracking: The MLflow server of the starting task; its credentials go to the trainer privately.
            environ: Where S3 credentials come from (default: this process's environment); ``{}`` for none.
        """
        secrets = trainer_secrets(environ)
        if tracking is not None:
            secrets |= tracking.credentials()
        return cls(
            command=list(value["command"]),
            environment=dict(value["environment"]),
            secrets=secrets,
            window=list(value.get("window", [])),
            cycle_id=str(value.get("cycle_id", "")),
            lease=str(value.get("lease", "")),
        )

    def project(self) -> ProjectConfig:
        """The resolved project the trainer receives."""
        from retrainer.config import project_from_json

        return project_from_json(self.environment[CONFIG_ENV], source=CONFIG_ENV)


def trainer_command(
    cutoff: str,
    cycle_id: str,
    *,
    trigger: str,
    window_batches: int | None = None,
    max_train_rows: int | None = None,
    lease: str | None = None,
) -> list[str]:
    """Arguments of ``retrainer train`` for one cycle (the config comes through ``RETRAINER_CONFIG_JSON``)."""
    command = ["train", "--cutoff", cutoff, "--cycle-id", cycle_id, "--trigger", trigger]
    if lease:
        command += ["--lease", lease]
    if window_batches is not None:
        command += ["--window-batches", str(window_batches)]
    if max_train_rows is not None:
        command += ["--max-train-rows", str(max_train_rows)]
    return command


def trainer_environment(
    config: ProjectConfig, tracking: Tracking, environ: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """The trainer's environment: the resolved project, provenance, the MLflow server and the worker's S3 settings.

    Args:
        config: The project, as the run resolved it (environment variables and relative paths).
        tracking: The MLflow server the trainer logs the candidate to.
        environ: The worker's environment for S3 settings (default: this process's).

    Returns:
        ``(environment, secrets)``: variables safe to show, and credentials to pass privately.
    """
    environ = dict(os.environ if environ is None else environ)
    training = config.training
    environment = {
        CONFIG_ENV: json.dumps(config.model_dump(mode="json", by_alias=True), separators=(",", ":")),
        BACKEND_ENV: training.backend.value,
        "PYTHONUNBUFFERED": "1",
        **tracking.environment(),
    }
    if training.backend is not TrainingBackend.LOCAL:
        environment[IMAGE_ENV] = training.image
    environment.update({name: environ[name] for name in PASSTHROUGH_ENV if environ.get(name)})
    return environment, trainer_secrets(environ) | tracking.credentials()


def trainer_secrets(environ: dict[str, str] | None = None) -> dict[str, str]:
    """S3 credentials of the worker the trainer needs: passed privately, never logged or stored."""
    environ = dict(os.environ if environ is None else environ)
    return {name: environ[name] for name in SECRET_ENV if environ.get(name)}


def plan(
    config: ProjectConfig,
    tracking: Tracking,
    cutoff: str,
    cycle_id: str,
    *,
    trigger: str,
    window_batches: int | None = None,
    max_train_rows: int | None = None,
    require_new_data: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> TrainerLaunch:
    """Decide whether the cycle trains and on which window, before any trainer is started.

    Args:
        config: The project.
        tracking: The MLflow server the trainer logs to.
        cutoff: The cycle's cutoff (ISO time).
        cycle_id: Identifies the cycle in run names and tags.
        trigger: Why the cycle runs, recorded on the candidate run.
        window_batches: Override of ``window.batches``.
        max_train_rows: Train on a sample of at most this many rows.
        require_new_data: The cycle's new batches; when given and empty, there is nothing to retrain on.
        environ: The worker's environment (default: this process's).

    Returns:
        The launch of the trainer.

    Raises:
        NothingToTrainError: ``require_new_data`` is an empty list.
        CatalogError: No accepted batch ended by the cutoff.
    """
    from retrainer.steps.candidate import training_window

    records = training_window(config, cutoff, window_batches, require_new_data)
    environment, secrets = trainer_environment(config, tracking, environ)
    lease = secrets_module.token_hex(8)
    command = trainer_command(
        cutoff,
        cycle_id,
        trigger=trigger,
        window_batches=window_batches,
        max_train_rows=max_train_rows,
        lease=lease,
    )
    return TrainerLaunch(command, environment, secrets, [r.batch_id for r in records], cycle_id, lease)


def close_abandoned_runs(config: ProjectConfig, tracking: Tracking, cycle_id: str, reason: str) -> list[str]:
    """Mark the cycle's candidate runs that a dead trainer left RUNNING as KILLED, saying why.

    Such a run has no model, so it is never evaluated nor registered; closing it keeps the MLflow UI honest and
    leaves its batches "new" for the next cycle.

    Returns:
        The ids of the runs closed.
    """
    from retrainer.steps.common import TAG

    with tracking.active():
        client = tracking.client()
        experiment = client.get_experiment_by_name(config.name)
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`{TAG}kind` = 'candidate' and tags.`{TAG}cycle_id` = '{cycle_id}' "
                "and attributes.status = 'RUNNING'"
            ),
        )
        for run in runs:
            client.set_tag(run.info.run_id, f"{TAG}failure", reason[:5000])
            client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in runs]


LEASE_TAG = "retrainer.training_lease"
TRY_MARK = "-try"


def plan_lease(lease: str) -> str:
    """The lease the plan named, without the try of the task that holds it."""
    return lease.partition(TRY_MARK)[0]


def lease_try(lease: str) -> int:
    """The try of the task holding ``lease`` (0 for a lease without one)."""
    _, mark, number = lease.partition(TRY_MARK)
    return int(number) if mark and number.isdigit() else 0


def training_lease(config: ProjectConfig, attempt: str) -> str:
    """The lease a trainer holds while its candidate run is open (``<root_uri>/locks/training/<attempt>.json``)."""
    from retrainer import storage

    return storage.join(config.data.root_uri, "locks", "training", f"{attempt}.json")


def lease_ttl(config: ProjectConfig) -> timedelta:
    """How long a training lease outlives a holder that died without releasing it."""
    return timedelta(minutes=config.training.timeout_minutes + 10)


@contextmanager
def launcher_lease(launch: TrainerLaunch, launcher: str) -> Iterator[None]:
    """Hold the trainer's lease from its launcher (the Airflow task) while the trainer runs.

    A trainer in a container sees the data root read-only, so the task that starts it holds the lease the
    trainer's run is tagged with: a trainer killed (out of memory, its container or pod removed) ends the task,
    which releases it, and a task killed with it leaves a lease of a dead process. Either way the next train
    step closes the run as KILLED.
    """
    from retrainer import locks

    if not launch.lease:
        yield
        return
    config = launch.project()
    owner = locks.default_owner(f"{launcher} of cycle {launch.cycle_id}")
    with locks.held(training_lease(config, launch.lease), owner, ttl=lease_ttl(config), wait_s=0):
        yield


def close_abandoned_candidates(config: ProjectConfig, tracking: Tracking, lease: str | None = None) -> list[str]:
    """Close as KILLED the project's candidate runs left RUNNING by a trainer that is gone, saying why.

    A trainer holds a lease (:func:`training_lease`, named by the run's ``retrainer.training_lease`` tag) while
    its run is open; a run whose lease was released, expired, or taken by a process of this host that no longer
    exists was abandoned (killed, or cut off from MLflow before it could end the run). So was a run of an
    earlier try of the same task as ``lease`` (the lease of the trainer calling this): Airflow runs one try of
    a task at a time, whatever the earlier try's lease still says. A run without the tag (trained before
    leases) is abandoned once it is older than ``training.timeout_minutes``, when its task would have been
    stopped. Run by every train step before it trains, in the CLI as in Airflow.

    Returns:
        The ids of the runs closed.
    """
    from retrainer import locks
    from retrainer.steps.common import TAG

    closed = []
    with tracking.active():
        client = tracking.client()
        experiment = client.get_experiment_by_name(config.name)
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{TAG}kind` = 'candidate' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            attempt = run.data.tags.get(LEASE_TAG)
            if attempt and lease and attempt != lease and _earlier_try(attempt, lease):
                why = f"try {lease_try(attempt)} of its task was stopped (try {lease_try(lease)} started)"
            elif attempt:
                why = locks.abandoned(training_lease(config, attempt))
            else:
                age_s = time.time() - run.info.start_time / 1000
                why = (
                    f"it has been running for {age_s / 60:.0f} min, over training.timeout_minutes"
                    if age_s > config.training.timeout_minutes * 60
                    else None
                )
            if why is None:
                continue  # its trainer is still at work
            reason = f"abandoned: {why} before the run ended; closed by a later train step"
            client.set_tag(run.info.run_id, f"{TAG}failure", reason)
            client.set_terminated(run.info.run_id, status="KILLED")
            log.warning("closed the abandoned candidate run %s as KILLED: %s", run.info.run_id, why)
            closed.append(run.info.run_id)
    return closed


def _earlier_try(attempt: str, lease: str) -> bool:
    """Whether ``attempt`` is the lease of an earlier try of the task holding ``lease``."""
    return plan_lease(attempt) == plan_lease(lease) and lease_try(attempt) < lease_try(lease)


def record_image_id(tracking: Tracking, run_id: str, image_id: str) -> None:
    """Tag a candidate run with the image digest its launcher learnt after the start (a pod's, from the kubelet).

    The trainer tags its run with what it was told at start; a Kubernetes pod is told only the image reference,
    since the cluster resolves the digest as it pulls. ``promote`` copies the tag to the model version.
    """
    from retrainer.steps.common import TAG

    with tracking.active():
        tracking.client().set_tag(run_id, f"{TAG}trainer_image_id", image_id)


def provenance(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Where this process trains, as the launcher told it: backend, image and image id (empty when unknown)."""
    environ = os.environ if environ is None else environ
    return {
        "training_backend": environ.get(BACKEND_ENV, "in_process"),
        "trainer_image": environ.get(IMAGE_ENV, ""),
        "trainer_image_id": environ.get(IMAGE_ID_ENV, ""),
    }


def read_result(text: str | bytes | dict[str, Any] | None, where: str) -> TrainingResult:
    """The trainer's result, checked: the candidate's run id, window and metrics.

    Args:
        text: The result file's content (or the mapping a backend already decoded).
        where: Where it was read from, for the error message.

    Raises:
        TrainerFailedError: The trainer exited 0 but left no usable result.
    """
    if text is None or text in ("", b""):
        raise TrainerFailedError(f"the trainer exited 0 but wrote no result to {where}", 0, [])
    try:
        result = text if isinstance(text, dict) else json.loads(text)
    except ValueError as error:
        raise TrainerFailedError(f"the trainer's result in {where} is not JSON: {error}", 0, []) from None
    if not isinstance(result, dict) or not result.get("run_id"):
        raise TrainerFailedError(f"the trainer's result in {where} has no run_id: {str(result)[:200]}", 0, [])
    from pydantic import ValidationError

    from retrainer.steps.candidate import TrainingResult

    try:
        return TrainingResult.model_validate(result)
    except ValidationError as error:
        raise TrainerFailedError(f"the trainer's result in {where} is incomplete: {error}", 0, []) from None


def failure_message(
    exit_code: int | None,
    tail: Iterable[str | bytes],
    *,
    where: str,
    oom_killed: bool = False,
    memory: str | None = None,
) -> str:
    """Say why a trainer failed: its exit code, whether it ran out of memory, and its last log lines.

    ``tail`` holds the lines as the engine sends them: text or bytes, with or without their line ends.
    """
    if oom_killed or exit_code == 137:
        cause = (
            f"was killed for memory (exit code 137, limit {memory}): raise training.memory or train on fewer rows"
            if oom_killed
            else "was killed (exit code 137: out of memory or stopped from outside)"
        )
    else:
        cause = f"exited with code {exit_code}"
    decoded = [(line.decode(errors="replace") if isinstance(line, bytes) else line).rstrip("\n") for line in tail]
    lines = "\n".join(f"  | {line}" for line in decoded[-TAIL_LINES:]) or "  | (no output)"
    return f"the trainer in {where} {cause}; no model was registered. Its last log lines:\n{lines}"


PR_SET_PDEATHSIG = 1  # linux/prctl.h


class TrainerProcess(Protocol):
    """A local trainer as its launcher handles it: a ``subprocess.Popen`` or a forked trainer."""

    pid: int
    returncode: int | None
    stdout: IO[str] | None

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def kill(self) -> None: ...


def _die_with_launcher() -> Callable[[], None] | None:
    """What the trainer subprocess runs before its command so that it is killed with its launcher (Linux).

    A launcher killed outright (SIGKILL, its task stopped by Airflow) cannot kill its trainer; without this the
    trainer would train on, beside the next try's. The kernel signals when the *thread* that started the trainer
    ends: :func:`run_local` must be called from the thread that waits for it (the task's main thread does).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    launcher = os.getpid()

    def die_with_launcher() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != launcher:  # the launcher died before prctl took effect
            os._exit(1)

    return die_with_launcher


def run_local(
    launch: TrainerLaunch,
    *,
    timeout_s: float,
    log_line: Callable[[str], None] = lambda line: None,
    python: str = sys.executable,
    on_start: Callable[[TrainerProcess], None] = lambda process: None,
    start: Literal["exec", "fork"] = "exec",
) -> TrainingResult:
    """Run the trainer as a subprocess of this worker (the ``local`` backend) and return its result.

    Args:
        launch: The planned launch.
        timeout_s: Kill the trainer after this many seconds.
        log_line: Receives each line the trainer prints, as it prints it.
        python: The interpreter whose ``retrainer`` package runs the trainer (``exec`` only).
        on_start: Receives the trainer's process as soon as it runs (so that a caller can kill it).
        start: ``exec`` starts ``python -m retrainer`` afresh; ``fork`` forks this process, whose imports are
            warm, and runs the same command in the child (:mod:`retrainer.forked_trainer`): seconds sooner.

    Raises:
        TrainerFailedError: The trainer exited non-zero, timed out or left no result.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with (
        launcher_lease(launch, "trainer subprocess"),
        tempfile.TemporaryDirectory(prefix="retrainer-train-") as folder,
    ):
        result_path = Path(folder) / "result.json"
        # MLflow settings come from the launch only, never from what the worker's environment happens to hold.
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_REGISTRY"))
        }
        env = {**inherited, **launch.environment, **launch.secrets}
        args = launch.command_with_result(str(result_path))
        process: TrainerProcess
        if start == "fork":
            from retrainer import forked_trainer

            process = forked_trainer.start(args, env, before=_die_with_launcher())
        else:
            process = subprocess.Popen(
                [python, "-m", "retrainer", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                preexec_fn=_die_with_launcher(),
            )
        on_start(process)
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                log_line(line)
            exit_code = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if exit_code != 0:
            where = "a local subprocess" if start == "exec" else "a local process forked from its launcher"
            if exit_code == -9:
                tail.append(f"(killed after the {timeout_s:.0f} s timeout, training.timeout_minutes)")
            raise TrainerFailedError(failure_message(exit_code, list(tail), where=where), exit_code, list(tail))
        text = result_path.read_text() if result_path.exists() else None
        return read_result(text, str(result_path))
