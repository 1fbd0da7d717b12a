"""Where MLflow is: every step that logs runs or reads the registry is handed a :class:`Tracking` explicitly.

Nothing in the platform relies on whatever ``MLFLOW_TRACKING_URI`` an earlier piece of code left in the
process. An Airflow task builds its ``Tracking`` from the ``mlflow_default`` connection (the provider's
``MlflowHook``); the command line and the trainer build it from their own environment with
:meth:`Tracking.from_env`, and fail with a clear message when nothing says where the server is.

MLflow's own API reads the endpoint from process state (``mlflow.set_tracking_uri``) and the credentials from
environment variables when each request is made, so :meth:`Tracking.active` sets both for the duration of a
step and puts back what was there before.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

URI_ENV = "MLFLOW_TRACKING_URI"
REGISTRY_ENV = "MLFLOW_REGISTRY_URI"
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class TrackingError(ValueError):
    """Nothing says where the MLflow tracking server is."""


@dataclass(frozen=True)
class Tracking:
    """An MLflow tracking server (and its model registry) and how to log in to it.

    Attributes:
        uri: Tracking URI, e.g. ``http://mlflow:5000`` (or ``sqlite:///...`` for a local store in tests).
        username: Basic-auth user, if the server wants one.
        password: Basic-auth password (never shown in ``repr``).
        token: Bearer token, instead of user and password.
    """

    uri: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.uri.strip():
            raise TrackingError("the MLflow tracking URI is empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tracking:
        """The server named by ``MLFLOW_TRACKING_URI`` (and its credentials) in ``environ``.

        Raises:
            TrackingError: ``MLFLOW_TRACKING_URI`` is not set.
        """
        env = os.environ if environ is None else environ
        uri = env.get(URI_ENV, "").strip()
        if not uri:
            raise TrackingError(
                f"{URI_ENV} is not set: point it at the MLflow server (e.g. http://127.0.0.1:5000, which "
                "`retrainer stack status` prints for the embedded stack)"
            )
        return cls(uri, env.get(USERNAME_ENV) or None, env.get(PASSWORD_ENV) or None, env.get(TOKEN_ENV) or None)

    def credentials(self) -> dict[str, str]:
        """The credentials as the environment variables MLflow reads (for a trainer's private environment)."""
        pairs = {USERNAME_ENV: self.username, PASSWORD_ENV: self.password, TOKEN_ENV: self.token}
        return {name: value for name, value in pairs.items() if value}

    def environment(self) -> dict[str, str]:
        """The non-secret part: the tracking URI, for a trainer's environment."""
        return {URI_ENV: self.uri}

    @contextlib.contextmanager
    def active(self) -> Iterator[Tracking]:
        """Make MLflow's module-level API talk to this server until the block ends, then restore the previous.

        MLflow keeps the URIs in module globals and mirrors them into ``MLFLOW_TRACKING_URI`` and
        ``MLFLOW_REGISTRY_URI``; both, the credential variables and the artifact progress bar (off inside), are
        put back as they were.
        """
        import mlflow
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        names = (URI_ENV, REGISTRY_ENV, USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV, PROGRESS_BAR_ENV)
        saved_env = {name: os.environ.get(name) for name in names}
        saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
        for name in (USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV):
            os.environ.pop(name, None)
        os.environ.update(self.credentials())
        # A step's log is read by people (Airflow's task log): no progress bar redrawn per artifact.
        os.environ[PROGRESS_BAR_ENV] = "false"
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        try:
            yield self
        finally:
            mlflow.set_tracking_uri(saved_tracking)  # type: ignore[arg-type]  # None clears it
            registry_utils._registry_uri = saved_registry
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def client(self) -> MlflowClient:
        """A client of this server's tracking store and model registry (use it inside :meth:`active`)."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


def registry_missing(error: Any) -> bool:
    """Whether an MLflow error says the model, version or alias does not exist."""
    return getattr(error, "error_code", None) in {
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
        "NOT_FOUND",
    }


class _LoggedLines(io.TextIOBase):
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.logger.info("%s", line)
        return len(text)


@contextlib.contextmanager
def prints_logged(logger: logging.Logger) -> Iterator[None]:
    """Log at INFO what MLflow's registry prints to stderr (``Created version '3'``...): it prints instead of
    logging, and Airflow shows a task's stderr as ERROR lines."""
    with contextlib.redirect_stderr(_LoggedLines(logger)):
        yield
