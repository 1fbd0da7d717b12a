"""The ``local`` training backend: the trainer as a subprocess of the Airflow worker."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from retrainer_provider.hooks.mlflow import MlflowHook


class TrainerSubprocessOperator(BaseOperator):
    """Runs ``python -m retrainer train ...`` on the worker, streaming its output into the task log.

    The fallback where no container engine is available: the same command as in a container, without the
    isolation (no CPU or memory limits; ``execution_timeout`` still applies).

    Args:
        launch: The planned launch (``TrainerLaunch.to_xcom()``, usually an XComArg).
    """

    template_fields = ("launch",)
    ui_color = "#e8f4e8"

    def __init__(self, *, launch: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launch = launch

    def execute(self, context: Any) -> dict[str, Any]:
        from retrainer.training import TrainerFailedError, TrainerLaunch, run_local
        from retrainer_provider.operators import trainer_failed

        MlflowHook().configure()
        launch = TrainerLaunch.from_xcom(self.launch)
        timeout = self.execution_timeout.total_seconds() if self.execution_timeout else 24 * 3600.0
        self.log.info(
            "training on %s in a subprocess: retrainer %s", ", ".join(launch.window), " ".join(launch.command)
        )
        try:
            return run_local(launch, timeout_s=timeout, log_line=lambda line: self.log.info("trainer | %s", line))
        except TrainerFailedError as error:
            raise trainer_failed(self.log, launch, str(error)) from None
