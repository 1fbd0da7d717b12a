"""The ``local`` training backend: the trainer as a subprocess of the Airflow worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseOperator

from retrainer_provider.hooks.mlflow import MlflowHook

if TYPE_CHECKING:
    from retrainer.training import TrainerProcess


class TrainerSubprocessOperator(BaseOperator):
    """Runs ``retrainer train ...`` in a process of its own on the worker, streaming its output into the task log.

    The fallback where no container engine is available: the same command as in a container, without the
    isolation (no CPU or memory limits; ``execution_timeout`` still applies). The trainer logs to the MLflow
    server of the ``mlflow_conn_id`` connection. By default the trainer is a fork of the task, whose imports
    are warm (the worker preloads them), rather than a fresh ``python -m retrainer`` that imports them again.

    Args:
        launch: The planned launch (``TrainerLaunch.to_xcom()``, usually an XComArg).
        mlflow_conn_id: The MLflow server's Airflow connection.
        start: ``fork`` (the default) or ``exec`` (a fresh interpreter).
    """

    template_fields = ("launch",)
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        launch: Any,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        start: Literal["exec", "fork"] = "fork",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.launch = launch
        self.mlflow_conn_id = mlflow_conn_id
        self.start = start
        self._process: TrainerProcess | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        from retrainer.training import TrainerFailedError, TrainerLaunch, run_local
        from retrainer_provider.operators import trainer_failed, try_number

        tracking = MlflowHook(self.mlflow_conn_id).get_tracking()
        launch = TrainerLaunch.from_xcom(self.launch, tracking).for_try(try_number(context))
        timeout = self.execution_timeout.total_seconds() if self.execution_timeout else 24 * 3600.0
        self.log.info(
            "training on %s in a %s process: retrainer %s",
            ", ".join(launch.window),
            "forked" if self.start == "fork" else "new",
            " ".join(launch.command),
        )
        try:
            result = run_local(
                launch,
                timeout_s=timeout,
                log_line=lambda line: self.log.info("trainer | %s", line),
                on_start=self._started,
                start=self.start,
            )
        except TrainerFailedError as error:
            raise trainer_failed(self.log, launch, tracking, str(error)) from None
        finally:
            self._process = None
        return result.to_json()

    def _started(self, process: TrainerProcess) -> None:
        self._process = process

    def on_kill(self) -> None:
        """Stop the trainer when the task is killed (marked failed in the UI, timed out, the worker stopping)."""
        process = self._process
        if process is not None and process.poll() is None:
            self.log.warning("killing the trainer (pid %d)", process.pid)
            process.kill()
