"""Only the platform's own models are loaded: a pickle aliased as @champion, a skops file that needs a function,
an altered model file and a model of a foreign run are refused, and none of their code runs.

Real local MLflow store (MLflow's own pickle switch off, as in every task), synthetic project.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import steps, trusted_models
from retrainer.tracking import Tracking
from retrainer.trusted_models import UntrustedModelError

pytestmark = pytest.mark.usefixtures("module_mlflow")


class _Payload:
    """A "model" that runs a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _tracking() -> Tracking:
    return Tracking.from_env()


def _champion_project(synthetic_project: Callable[..., Any], synth: SimpleNamespace, name: str) -> Any:
    # No serving check (a fresh process per model, tested on its own): these tests are about loading.
    project = synthetic_project(name, promotion={"serving": {"enabled": False}})
    project.land_and_accept(range(2))
    cutoff = synth.cutoff_after(1)
    training = steps.train(project.config, _tracking(), cutoff, "first")
    evaluation = steps.evaluate(project.config, _tracking(), training.run_id)
    assert steps.promote(project.config, _tracking(), training.run_id, evaluation).promoted
    return SimpleNamespace(project=project, config=project.config, cutoff=cutoff)


def _register_as_champion(name: str, model: Any, *, tags: dict[str, str], **log_options: Any) -> str:
    """What an intruder with write access to the registry can do: log any model, register it, alias it."""
    import mlflow

    with _tracking().active(), mlflow.start_run() as run:
        mlflow.set_tags(tags)
        info = mlflow.sklearn.log_model(model, name="model", **log_options)
        version = mlflow.register_model(info.model_uri, name).version
        if tags.get("retrainer.kind") == "candidate":  # a forged digest, computed the way the platform does
            mlflow.set_tag(trusted_models.SHA256_TAG, steps.candidate._logged_digest(info.model_uri))
    _tracking().client().set_registered_model_alias(name, steps.CHAMPION, str(version))
    return run.info.run_id


def test_a_pickle_aliased_as_champion_is_refused_and_runs_no_code(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace, tmp_path: Path
) -> None:
    state = _champion_project(synthetic_project, synth, "intruded")
    marker = tmp_path / "pwned"
    _register_as_champion(
        "intruded", _Payload(marker), tags={"retrainer.kind": "candidate"}, serialization_format="pickle"
    )
    candidate = steps.train(state.config, _tracking(), state.cutoff, "second")
    with pytest.raises(UntrustedModelError, match="is saved as 'pickle': the platform loads only the skops"):
        steps.load_model(_tracking().client(), state.config, "models:/intruded@champion")
    # The cycle goes on without loading it: the candidate is judged on the floors only, and says why.
    evaluation = steps.evaluate(state.config, _tracking(), candidate.run_id)
    assert evaluation.champion_problem and "is saved as 'pickle'" in evaluation.champion_problem
    assert not marker.exists(), "code of the pickle ran"
    # MLflow's own loader, as a task sees it, refuses too: nothing enables unpickling.
    import mlflow

    with _tracking().active(), pytest.raises(mlflow.exceptions.MlflowException, match="disallowed"):
        mlflow.sklearn.load_model("models:/intruded@champion")
    assert not marker.exists()


def test_a_model_of_a_run_that_is_not_a_candidate_is_refused(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace, tmp_path: Path
) -> None:
    from sklearn.linear_model import LinearRegression

    state = _champion_project(synthetic_project, synth, "foreign")
    run_id = _register_as_champion("foreign", LinearRegression(), tags={})
    with pytest.raises(UntrustedModelError, match=f"logged by run {run_id}, which is not a candidate"):
        steps.load_model(_tracking().client(), state.config, "models:/foreign@champion")


def test_a_skops_model_that_needs_a_function_is_refused_before_it_is_loaded(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace, tmp_path: Path
) -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    state = _champion_project(synthetic_project, synth, "crafted")
    model = FunctionTransformer(func=os.system)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    _register_as_champion(
        "crafted",
        model,
        tags={"retrainer.kind": "candidate"},
        serialization_format="skops",
        skops_trusted_types=trusted,
    )
    with pytest.raises(UntrustedModelError, match=r"needs types the platform does not trust: .*system"):
        steps.load_model(_tracking().client(), state.config, "models:/crafted@champion")


def test_an_altered_model_file_is_refused_and_the_platforms_own_model_loads(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace, tmp_path: Path
) -> None:
    import mlflow
    import numpy as np

    from retrainer import modeling

    state = _champion_project(synthetic_project, synth, "altered")
    client = _tracking().client()
    model = steps.load_model(client, state.config, "models:/altered@champion")  # its own: loads
    features, _ = modeling.prepare(synth.week(3, 20), state.config)
    assert np.isfinite(model.predict(features)).all()
    with _tracking().active():
        local = Path(mlflow.artifacts.download_artifacts("models:/altered@champion", dst_path=str(tmp_path / "m")))
        expected = trusted_models.expected_digest(client, "models:/altered@champion")
    packages = trusted_models.allowed_packages(state.config.estimator_class)
    assert trusted_models.verify_folder(local, expected, packages, "the copy") is not None
    altered = tmp_path / "altered"
    shutil.copytree(local, altered)
    with (altered / "model.skops").open("ab") as file:
        file.write(b"\0")
    with pytest.raises(UntrustedModelError, match="the copy changed since it was trained"):
        trusted_models.verify_folder(altered, expected, packages, "the copy")


def test_only_classes_of_the_allowed_packages_are_trusted() -> None:
    packages = trusted_models.allowed_packages("xgboost.XGBRegressor")
    trusted_models.check_types(
        ["numpy.dtype", "xgboost.core.Booster", "xgboost.sklearn.XGBRegressor"], packages, "m"
    )
    for refused in ("os.system", "builtins.eval", "numpy.load", "sklearn.nothing_here", "posix.system"):
        with pytest.raises(UntrustedModelError, match=refused.replace(".", r"\.")):
            trusted_models.check_types(["numpy.dtype", refused], packages, "m")
    assert trusted_models.allowed_packages("lightgbm.LGBMRegressor")[-1] == "lightgbm"
