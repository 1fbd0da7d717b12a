"""The model projects of a deployment: one YAML file each in a folder, and what each needs from Airflow.

Every file becomes two DAGs; an invalid file becomes a placeholder that names the problem, and hides no other
project. Each project also gets its own Airflow pool (one slot) that its data steps run in, so that its drift
monitor and its weekly cycle never change its batch catalog at the same time, and one project's backlog never
holds up another's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from retrainer.config import ConfigError, ProjectConfig, load_config

POOL_PREFIX = "retrainer_"
PROJECTS_ENV = "RETRAINER_PROJECTS_DIR"


def projects_dir() -> Path:
    """The folder of project files: ``RETRAINER_PROJECTS_DIR``, else the checkout's ``projects/``."""
    return Path(os.environ.get(PROJECTS_ENV) or Path(__file__).resolve().parents[2] / "projects")


@dataclass(frozen=True)
class ProjectScan:
    """The project files of a folder, sorted by file name.

    Attributes:
        valid: ``(file, project)`` of each valid file.
        invalid: ``(file, error)`` of each invalid one (or one that reuses another file's project name).
    """

    valid: list[tuple[Path, ProjectConfig]] = field(default_factory=list)
    invalid: list[tuple[Path, ConfigError]] = field(default_factory=list)


def scan_projects(folder: Path) -> ProjectScan:
    """Load every ``*.yaml`` file of ``folder``; never raises for a bad file."""
    scan = ProjectScan()
    names: dict[str, Path] = {}
    models: dict[str, Path] = {}
    roots: dict[str, Path] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            project = load_config(path)
            # Projects are isolated: each has its own DAGs, registered model (its own @champion) and data root.
            for taken, value, what in (
                (names, project.name, "name"),
                (models, project.model_name, "registered model"),
                (roots, project.data.root_uri, "data root"),
            ):
                if value in taken:
                    raise ConfigError(f"{path}: {what} {value!r} is already used by {taken[value]}")
        except ConfigError as error:
            scan.invalid.append((path, error))
            continue
        names[project.name], models[project.model_name], roots[project.data.root_uri] = path, path, path
        scan.valid.append((path, project))
    return scan


def pool_name(project: ProjectConfig) -> str:
    """The Airflow pool of a project's data steps."""
    return f"{POOL_PREFIX}{project.name}"


@dataclass(frozen=True)
class PoolSpec:
    """An Airflow pool a project needs."""

    slots: int
    description: str


def pool_definitions(scan: ProjectScan) -> dict[str, PoolSpec]:
    """The pool of every valid project, by pool name."""
    return {
        pool_name(project): PoolSpec(1, f"data steps of {project.name} ({path.name}): one at a time")
        for path, project in scan.valid
    }


def pools_json(folder: Path) -> str:
    """The pools of a folder's projects, in the format of ``airflow pools import``."""
    pools = pool_definitions(scan_projects(folder))
    return json.dumps(
        {
            name: {"slots": p.slots, "description": p.description, "include_deferred": False}
            for name, p in pools.items()
        },
        indent=2,
    )
