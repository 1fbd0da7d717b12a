"""How a task says "this input is rejected, and that is final": one line in its log, no traceback, no retry.

Airflow's task runner logs a failing task's exception with its traceback, an expected outcome (a quarantined
batch) included, and retries it. A :class:`TaskRejected` ends the task as failed with its message as the one
line; the task's :func:`final_rejection` retry policy fails it at once, while other errors keep their retries.
"""

from __future__ import annotations

from typing import Any


class TaskRejected(SystemExit):  # the runner logs a SystemExit as one line ("Task exited"), no traceback
    """The task's input is rejected for good (a quarantined batch): fail now, say why in one line."""


def final_rejection() -> Any:
    """The retry policy of a task that may raise :class:`TaskRejected`: no retry for it, the task's retries for
    anything else (a storage error is transient)."""
    from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=f"{__name__}.{TaskRejected.__name__}",
                action=RetryAction.FAIL,
                reason="rejected input: trying again cannot change it",
            )
        ]
    )
