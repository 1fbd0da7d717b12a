"""What every benchmark's own stack needs: a scratch folder, the suites copied into it, the test helpers."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def scratch_environment(prefix: str) -> Path:
    """A new scratch folder holding a copy of ``great_expectations/``; the platform's settings point into it.

    Sets ``RETRAINER_GX_ROOT`` and ``RETRAINER_PROJECTS_DIR`` (``<folder>/projects``), keeps MLflow's pickle
    loading off (as the platform runs), and makes ``tests/integration/conftest.py`` (free ports, project
    copies) importable.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    gx = root / "gx"
    shutil.copytree(REPO / "great_expectations", gx, ignore=shutil.ignore_patterns("uncommitted"))
    os.environ["RETRAINER_GX_ROOT"] = str(gx)
    os.environ["RETRAINER_PROJECTS_DIR"] = str(root / "projects")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # the platform loads its own models without it
    for folder in (REPO, REPO / "tests"):  # tests/integration/conftest.py imports ``tests.helpers``
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    return root


def restore(template: Path, target: Path) -> None:
    """Put ``target`` back to the state saved in ``template`` (a bench's data folder before each repetition)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(template, target)
