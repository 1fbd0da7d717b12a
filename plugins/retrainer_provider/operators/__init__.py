"""Operators that run the train step on the project's backend (``training.backend``).

All of them run the same ``retrainer train`` command planned by the ``plan_training`` task, pass its result
(the candidate's MLflow run id and a summary) to XCom, and fail with the trainer's exit code and last log lines.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from retrainer.config import ProjectConfig, TrainingBackend


def trainer_operator(project: ProjectConfig, launch: Any, *, task_id: str = "train", **kwargs: Any) -> Any:
    """The train task of ``project`` on its configured backend.

    Args:
        project: The project; ``project.training`` chooses the backend, image and resources.
        launch: The planned launch (an XComArg of ``TrainerLaunch.to_xcom()``).
        task_id: The task's id.
        **kwargs: Further operator arguments (retries, doc_md...).

    Returns:
        The operator, inside the DAG being defined. Provider modules are imported only for the chosen backend,
        so parsing a DAG that trains locally does not load the Docker or Kubernetes clients.
    """
    training = project.training
    common = {
        "task_id": task_id,
        "launch": launch,
        "execution_timeout": timedelta(minutes=training.timeout_minutes),
        **kwargs,
    }
    if training.backend is TrainingBackend.DOCKER:
        from retrainer_provider.operators.trainer_docker import TrainerDockerOperator

        return TrainerDockerOperator(training=training, data_root=_local_root(project), **common)
    if training.backend is TrainingBackend.KUBERNETES:
        from retrainer_provider.operators.trainer_pod import TrainerPodOperator

        return TrainerPodOperator(
            training=training, data_root=_local_root(project), pod_name=f"train-{project.name}", **common
        )
    from retrainer_provider.operators.trainer_local import TrainerSubprocessOperator

    return TrainerSubprocessOperator(**common)


def _local_root(project: ProjectConfig) -> str | None:
    """The data root when it is a local folder (mounted into containers), None on S3."""
    root = project.data.root_uri
    return None if "://" in root else root


def try_number(context: Any) -> int:
    """The try of the running task (0 without a task instance, as when an operator is run by hand)."""
    ti = context.get("ti") if hasattr(context, "get") else None
    return int(getattr(ti, "try_number", 0) or 0)


def trainer_failed(
    log: logging.Logger, launch: Any, tracking: Any, message: str, *, retryable: bool = True
) -> AirflowException:
    """The task's error for a trainer that died, once the candidate run it left unfinished is closed as KILLED.

    Args:
        log: The task's logger.
        launch: The ``TrainerLaunch`` that failed.
        tracking: The MLflow server (``retrainer.tracking.Tracking``) the trainer logged to.
        message: Why it failed (exit code, last lines), also recorded on the closed run.
        retryable: False when a retry would fail the same way (killed for memory at the configured limit):
            the task then fails at once instead of spending its retries.
    """
    from retrainer.training import close_abandoned_runs

    try:
        closed = close_abandoned_runs(launch.project(), tracking, launch.cycle_id, message)
        if closed:
            log.warning("closed the unfinished candidate run(s) %s as KILLED", ", ".join(closed))
    except Exception as error:  # the trainer's failure matters more than this clean-up
        log.warning("could not close the unfinished candidate runs: %s", error)
    if not retryable:
        return AirflowFailException(f"{message}\n(not retried: the same limit would stop it again)")
    return AirflowException(message)
