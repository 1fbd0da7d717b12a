"""Serving check: the registered candidate, loaded as a consumer loads it, predicts the newest batch in time.

Each model is measured in its own fresh process (``python -m retrainer.serving``), the champion's and
the candidate's side by side, at the same time: whatever else loads the machine weighs on both alike, which
keeps their ratio honest (and the check half as long). The verdict
(:func:`retrainer.serving.judge`) is part of the promotion decision: a candidate that fails is rejected, and
the figures are recorded on the decision, the version and the model card.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from retrainer import modeling, trusted_models
from retrainer.catalog import Catalog
from retrainer.serving import ServingFigures, judge
from retrainer.steps.common import TAG, StepResult, champion_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)


class ServingCheck(StepResult):
    """The serving check of one candidate.

    Attributes:
        passed: The candidate may serve.
        reason: Why, in words (what failed, or the figures).
        batch_id: The batch predicted (the newest of the candidate's window).
        candidate: The candidate's figures.
        champion: The champion's, measured the same way (None without a champion).
    """

    passed: bool
    reason: str
    batch_id: str
    candidate: ServingFigures
    champion: ServingFigures | None = None


def serving_check(
    config: ProjectConfig, tracking: Tracking, run_id: str, candidate_uri: str, champion_uri: str | None = None
) -> ServingCheck:
    """Load ``candidate_uri`` (and ``champion_uri``) in fresh processes and predict the newest batch of the
    candidate run's window; judge the figures against ``promotion.serving``.

    Raises:
        ValueError: The run records no training window.
    """
    with tracking.active():
        return _check(config, tracking, run_id, candidate_uri, champion_uri)


def serving_check_of_run(
    config: ProjectConfig, tracking: Tracking, run_id: str, candidate_uri: str | None = None
) -> ServingCheck:
    """The serving check of a candidate run, by hand (``retrainer serving-check``): ``candidate_uri``, by
    default the run's registered version (else the model it logged), beside the current champion.

    Raises:
        ValueError: The run has no model, or records no training window.
    """
    with tracking.active():
        client = tracking.client()
        if candidate_uri is None:
            versions = client.search_model_versions(f"name='{config.model_name}' and run_id='{run_id}'")
            candidate_uri = (
                f"models:/{config.model_name}/{versions[0].version}"
                if versions
                else client.get_run(run_id).data.tags.get(f"{TAG}model_uri")
            )
        if not candidate_uri:
            raise ValueError(f"MLflow run {run_id} has no model: is it a candidate of the train step?")
        champion = champion_version(client, config)
        champion_uri = None if champion is None else f"models:/{config.model_name}/{champion.version}"
        return _check(config, tracking, run_id, candidate_uri, champion_uri)


def _check(
    config: ProjectConfig, tracking: Tracking, run_id: str, candidate_uri: str, champion_uri: str | None
) -> ServingCheck:
    client = tracking.client()
    window = client.get_run(run_id).data.tags.get(f"{TAG}window")
    if not window:
        raise ValueError(f"MLflow run {run_id} records no training window: is it a candidate of the train step?")
    catalog = Catalog(config)
    newest = max((catalog.get(batch_id) for batch_id in json.loads(window)), key=lambda r: r.period_end_ts)
    budget = config.promotion.serving
    features = modeling.features_of(catalog.load([newest]), config).tail(budget.max_rows).reset_index(drop=True)
    with tempfile.TemporaryDirectory(prefix="retrainer-serving-") as folder:
        path = Path(folder) / "features.parquet"
        features.to_parquet(path, index=False)
        packages = trusted_models.allowed_packages(config.estimator_class)
        probe = partial(_probe, client, packages, features=path, timeout_s=budget.timeout_s)
        with ThreadPoolExecutor(max_workers=2) as pool:
            measuring = pool.submit(probe, candidate_uri, Path(folder) / "candidate")
            champion = probe(champion_uri, Path(folder) / "champion") if champion_uri else None
            candidate = measuring.result()
    passed, reason = judge(candidate, champion, budget)
    log.info("%s: %s", candidate_uri, reason)
    return ServingCheck(
        passed=passed, reason=reason, batch_id=newest.batch_id, candidate=candidate, champion=champion
    )


def _probe(
    client: MlflowClient, packages: tuple[str, ...], model_uri: str, into: Path, features: Path, timeout_s: float
) -> ServingFigures:
    """Fetch ``model_uri``'s files here (what ``load_model`` does first) and check they are the platform's own
    model, then load them and predict in a fresh ``python -m retrainer.serving`` process; a failure at any step
    is the finding."""
    import mlflow

    try:
        expected = trusted_models.expected_digest(client, model_uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into))
        trusted_models.verify_folder(Path(local), expected, packages, model_uri)
    except Exception as error:  # whatever the registry, the artifact store or the check says is the finding
        return ServingFigures(model_uri=model_uri, rows=0, problem=f"cannot load: {error}")
    # Checked above as the platform's own skops model (format, digest, types): the consumer's loader may read it.
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    command = [sys.executable, "-m", "retrainer.serving", "--model-uri", model_uri, "--model-path", local]
    command += ["--features", str(features)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        problem = f"loading and predicting took over {timeout_s:g} s"
        return ServingFigures(model_uri=model_uri, rows=0, problem=problem)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        problem = f"the serving probe exited with {done.returncode}: {tail}"
        return ServingFigures(model_uri=model_uri, rows=0, problem=problem)
    return ServingFigures.model_validate_json(lines[-1])
