"""Only the platform's own models are ever loaded: skops files of candidate runs, checked before loading.

Loading a pickle runs whatever code it carries, and MLflow's skops loader trusts the types the model's own
MLmodel file lists. Anyone who can write to the registry could therefore run code in the next worker that
evaluates ``@champion``. So the platform never enables pickle deserialisation and never asks MLflow to load a
model. Before :func:`load` deserialises anything it checks that:

1. the model comes from a candidate run of the platform's train step (its tag ``retrainer.kind``);
2. it is saved in the skops format (a pickle or cloudpickle model is refused);
3. its ``MLmodel`` and skops file have the digest recorded on that run when it was trained
   (``retrainer.model_sha256``);
4. every type the skops file needs beyond skops's own safe defaults is a class of scikit-learn, NumPy, SciPy,
   pandas, xgboost or the project's estimator package: never a function, never another module. The list comes
   from the file itself and is judged by this policy, not taken from the model's metadata.

Anything else is refused with :class:`UntrustedModelError`, naming what is wrong; nothing of it runs.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SHA256_TAG = "retrainer.model_sha256"
KIND_TAG = "retrainer.kind"
ALLOWED_PACKAGES = ("sklearn", "numpy", "scipy", "pandas", "xgboost")


class UntrustedModelError(ValueError):
    """A model the platform will not load: not its own, not skops, altered, or needing untrusted types."""


class VerifiedModel(NamedTuple):
    """A downloaded model that passed the checks: its serialised file and the types to trust loading it."""

    model_file: Path
    trusted: list[str]


def digest(folder: Path) -> str:
    """sha256 of a logged sklearn model's definition: its ``MLmodel`` file and its serialised model file."""
    flavor = _sklearn_flavor(folder / "MLmodel", str(folder))
    return _digest_of(folder, flavor)


def _digest_of(folder: Path, flavor: dict[str, Any]) -> str:
    model_file = folder / flavor.get("pickled_model", "")
    if not model_file.is_file():
        raise UntrustedModelError(f"the model at {folder} has no model file {model_file.name!r}")
    sha = hashlib.sha256()
    for path in (folder / "MLmodel", model_file):
        sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()


def _sklearn_flavor(mlmodel: Path, source: str) -> dict[str, Any]:
    if not mlmodel.is_file():
        raise UntrustedModelError(f"{source} is not an MLflow model (no MLmodel file)")
    flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
    if "sklearn" not in flavors:
        raise UntrustedModelError(
            f"{source} is not a scikit-learn model of the platform (flavors: {sorted(flavors)})"
        )
    return flavors["sklearn"]


def allowed_packages(estimator_class: str) -> tuple[str, ...]:
    """The packages whose classes a model may need: the usual ones and the project's estimator package."""
    return tuple(dict.fromkeys((*ALLOWED_PACKAGES, estimator_class.split(".", 1)[0])))


def check_types(types: list[str], packages: tuple[str, ...], source: str) -> None:
    """Refuse unless every name is a class of one of ``packages`` (importing the package, never the model)."""
    refused = []
    for name in types:
        module, _, attribute = name.rpartition(".")
        if not module or module.split(".", 1)[0] not in packages:
            refused.append(name)
            continue
        try:
            found = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            refused.append(name)
            continue
        if not isinstance(found, type):
            refused.append(name)
    if refused:
        raise UntrustedModelError(
            f"{source} needs types the platform does not trust: {', '.join(refused)} (only classes of "
            f"{', '.join(packages)} are allowed)"
        )


def verify_folder(
    folder: Path, expected_sha256: str | None, packages: tuple[str, ...], source: str
) -> VerifiedModel:
    """Check a downloaded model folder (format, digest, types); return its model file and the types to trust.

    Raises:
        UntrustedModelError: It is not a skops model, its digest differs, or it needs untrusted types.
    """
    skops_io = skops()

    flavor = _sklearn_flavor(folder / "MLmodel", source)
    if flavor.get("serialization_format") != "skops":
        raise UntrustedModelError(
            f"{source} is saved as {flavor.get('serialization_format')!r}: the platform loads only the skops "
            "models its train step logged, never a pickle"
        )
    found = _digest_of(folder, flavor)
    if expected_sha256 is None:
        log.warning(
            "%s: no recorded digest (trained before digests were recorded): format and types checked", source
        )
    elif found != expected_sha256:
        raise UntrustedModelError(
            f"{source} changed since it was trained (sha256 {found[:12]}…, recorded {expected_sha256[:12]}…)"
        )
    model_file = folder / flavor["pickled_model"]
    types = skops_io.get_untrusted_types(file=model_file)  # reads the schema, runs nothing
    check_types(types, packages, source)
    return VerifiedModel(model_file, types)


def source_run(client: MlflowClient, uri: str) -> str:
    """The run that logged the model at ``models:/<name>/<version>``, ``models:/<name>@<alias>``,
    ``models:/<logged model id>`` or ``runs:/<run>/...``."""
    if uri.startswith("runs:/"):
        return uri.removeprefix("runs:/").split("/", 1)[0]
    if not uri.startswith("models:/"):
        raise UntrustedModelError(f"{uri} is not a registry or run URI: the platform loads only its own models")
    path = uri.removeprefix("models:/").rstrip("/")
    if "@" in path:
        name, alias = path.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id
    if "/" in path:
        name, version = path.split("/", 1)
        return client.get_model_version(name, version).run_id
    return client.get_logged_model(path).source_run_id


def expected_digest(client: MlflowClient, uri: str) -> str | None:
    """The digest recorded when the model at ``uri`` was trained, after checking a candidate run logged it.

    Raises:
        UntrustedModelError: No run of the platform's train step logged it.
    """
    run_id = source_run(client, uri)
    if not run_id:
        raise UntrustedModelError(f"{uri} was not logged by a run: the platform loads only its own models")
    tags = client.get_run(run_id).data.tags
    if tags.get(KIND_TAG) != "candidate":
        raise UntrustedModelError(
            f"{uri} was logged by run {run_id}, which is not a candidate of the platform's train step"
        )
    return tags.get(SHA256_TAG)


def skops() -> Any:
    """``skops.io``, imported without a flood of warnings: on import it looks every SciPy ufunc up in every
    loaded module (``pickle.whichmodule``), and in a task each of Airflow's deprecated modules answers with a
    FutureWarning (1,160 lines at the top of the evaluate log)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import skops.io
    return skops.io


def load(client: MlflowClient, uri: str, estimator_class: str) -> Any:
    """Download the model at ``uri``, check it (see the module), and deserialise it with skops.

    Raises:
        UntrustedModelError: The model is refused; nothing of it was deserialised.
    """
    import mlflow

    skops_io = skops()
    expected = expected_digest(client, uri)
    with tempfile.TemporaryDirectory(prefix="retrainer-model-") as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
        verified = verify_folder(local, expected, allowed_packages(estimator_class), uri)
        return skops_io.load(verified.model_file, trusted=verified.trusted)
