"""What every step shares: the tag prefix, the champion alias, the steps' errors and small helpers."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from retrainer.tracking import registry_missing

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from retrainer.config import ProjectConfig

CHAMPION = "champion"
CHALLENGER = "challenger"  # promotion.mode: shadow: scored beside the champion until it wins or is retired
TAG = "retrainer."  # prefix of every tag the platform writes to runs and model versions
NO_NEW_DATA = "no new accepted batch"  # how a cycle with nothing to train says so (CLI and DAG alike)


class StepResult(BaseModel):
    """Base of every step's result: small, JSON-safe, the same for the CLI, XCom and the cycle record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """The JSON-safe form (what goes to XCom and what the CLI prints)."""
        return self.model_dump(mode="json")


class BatchRejectedError(RuntimeError):
    """One or more batches failed validation and were quarantined; the cycle must stop before training.

    Attributes:
        batch_ids: The batches quarantined.
        data_docs: The Data Docs page of the (first) failed validation, when one was built.
    """

    def __init__(self, message: str, batch_ids: list[str] | None = None, data_docs: str | None = None) -> None:
        super().__init__(message)
        self.batch_ids = list(batch_ids or [])
        self.data_docs = data_docs


class NothingToTrainError(RuntimeError):
    """The cycle has no new accepted data and was not forced."""


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True
    ).stdout.strip()


def code_version() -> str:
    """The platform's code version: ``RETRAINER_CODE_VERSION``, else the git commit, else the package version."""
    if version := os.environ.get("RETRAINER_CODE_VERSION"):
        return version
    try:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "--short=12", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version as package_version

        return package_version("retrainer")


def safe_id(value: str) -> str:
    """A run id or label made safe for file names and object keys."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value).strip("_")


def parse_cutoff(value: str | datetime | None) -> datetime:
    """A cycle's cutoff as an aware UTC datetime (now when None)."""
    if value is None:
        return datetime.now(UTC)
    try:
        ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cutoff {value!r} is not an ISO time like 2013-01-14T03:00:00Z") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def champion_version(client: MlflowClient, config: ProjectConfig) -> ModelVersion | None:
    """The model version carrying the ``champion`` alias, or None when there is none yet."""
    return alias_version(client, config, CHAMPION)


def alias_version(client: MlflowClient, config: ProjectConfig, alias: str) -> ModelVersion | None:
    """The model version carrying ``alias``, or None when no version carries it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(config.model_name, alias)
    except MlflowException as error:
        if registry_missing(error):
            return None
        raise


def window_of_run(client: MlflowClient, run_id: str) -> list[str]:
    """The batch ids a candidate run was trained on (its ``retrainer.window`` tag)."""
    return json.loads(client.get_run(run_id).data.tags.get(f"{TAG}window", "[]"))


def load_model(client: MlflowClient, config: ProjectConfig, uri: str) -> Any:
    """Load a model of this platform's registry as a scikit-learn pipeline, only after checking it is one of the
    platform's own skops models (:mod:`retrainer.trusted_models`); pickle deserialisation stays off.

    Raises:
        UntrustedModelError: The model is refused (not the platform's, not skops, altered, untrusted types).
    """
    from retrainer import trusted_models

    return trusted_models.load(client, uri, config.estimator_class)
