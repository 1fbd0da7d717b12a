"""The trainer image's contract, checked without an engine: its pins and what its entrypoint imports.

Building and running the image needs a Docker engine (``make trainer-image``); these tests keep the parts
that can drift apart without one from doing so.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_trainer_pins_are_the_platforms_pins() -> None:
    platform = _pins(REPO / "requirements.txt")
    trainer = _pins(REPO / "docker" / "trainer-requirements.txt")
    assert {"mlflow-skinny", "scikit-learn", "xgboost", "pandas", "skops", "croniter"} <= set(trainer)
    # setuptools builds the package inside the image (no build isolation); the platform's runtime lacks it.
    build_only = {"setuptools"}
    differ = {
        name: (pin, platform.get(name))
        for name, pin in trainer.items()
        if platform.get(name) != pin and name not in build_only
    }
    assert not differ, f"re-pin with `make trainer-lock`: {differ}"
    # Only what training needs: none of the scheduler, validation or drift stacks.
    assert not {"apache-airflow", "great-expectations", "evidently", "mlflow"} & set(trainer)


def test_the_train_command_runs_without_the_stacks_dependencies() -> None:
    # The image has neither psutil nor httpx (the local stack's); the CLI must still start and train.
    code = (
        "import sys; sys.modules.update({'psutil': None, 'httpx': None}); "
        "from typer.testing import CliRunner; from retrainer.cli import app; "
        "result = CliRunner().invoke(app, ['train', '--help']); "
        "print(result.output); sys.exit(result.exit_code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--cutoff" in done.stdout
