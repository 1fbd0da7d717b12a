"""Supply chain: every lock pins each package with its hashes, the images install only with those hashes, and
the SBOM written from a lock names exactly its packages, hashes included."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCKS = ["requirements.txt", "requirements-dev.txt", "docker/trainer-requirements.txt"]


def _requirements(path: Path) -> dict[str, list[str]]:
    """Each pinned package of a uv/pip lock with the hashes listed under it."""
    pins: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line)
        if pin:
            current = f"{pin.group(1).lower()}=={pin.group(2)}"
            pins[current] = []
        elif current and (found := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current].append(found.group(1))
        elif line and not line.startswith((" ", "#")):
            current = None
    return pins


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_package_has_its_hashes(lock: str) -> None:
    pins = _requirements(REPO / lock)
    assert len(pins) > 10
    unhashed = [pin for pin, hashes in pins.items() if not hashes]
    assert not unhashed, f"re-lock with `make lock` / `make trainer-lock` (--generate-hashes): {unhashed}"


def test_installs_and_image_builds_check_the_hashes() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements.txt -r requirements-dev.txt" in makefile
    assert "--only-binary=:all: --require-hashes -r docker/trainer-requirements.txt" in makefile
    trainer = (REPO / "docker" / "trainer.Dockerfile").read_text()
    installs = [line for line in trainer.splitlines() if "pip install" in line and "-r " in line]
    assert len(installs) == 2 and all("--require-hashes" in line for line in installs)
    assert (
        "pip install --require-hashes -r requirements.txt" in (REPO / "docker" / "platform.Dockerfile").read_text()
    )


def test_the_sbom_of_the_trainer_image_lists_its_lock_with_the_hashes(tmp_path: Path) -> None:
    out = tmp_path / "trainer.cdx.json"
    lock = REPO / "docker" / "trainer-requirements.txt"
    command = [str(Path(sys.executable).with_name("cyclonedx-py")), "requirements", "--pyproject"]
    command += [str(REPO / "pyproject.toml"), "--output-format", "JSON", "--output-file", str(out), str(lock)]
    subprocess.run(command, check=True, capture_output=True)
    bom = json.loads(out.read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["metadata"]["component"]["name"] == "retrainer"
    listed = {
        f"{c['name'].lower()}=={c['version']}": sorted(
            h["content"] for ref in c.get("externalReferences", []) for h in ref.get("hashes", [])
        )
        for c in bom["components"]
    }
    assert listed == {pin: sorted(hashes) for pin, hashes in _requirements(lock).items()}
