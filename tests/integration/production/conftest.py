"""Fixtures of the production-stack tier: project files on S3 and the stack that runs them.

The stack is module-scoped (about a minute to start): a test module gets its own, over the project files of its
``production_projects`` fixture, which a module may override to bring other projects. Where the stack cannot
run (not root, no ``ip netns``, no PostgreSQL or Redis), the tests skip; in CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from retrainer.airflow_api import AirflowClient
from retrainer.stack import REPO_ROOT

from .stack import DATA_BUCKET, ProductionStack, StackUnavailable, production_stack


def _unavailable(reason: str) -> None:
    """Skip where the stack cannot run; in CI (``CI=true``) the production tests must run, so fail instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the production-stack tests, but {reason}", pytrace=False)
    pytest.skip(reason)


def write_s3_project(projects: Path, name: str, bucket: str = DATA_BUCKET) -> Path:
    """A copy of the demo project that keeps its data under ``s3://<bucket>/<name>``, all runs started by hand.

    Its schedule has no tick inside its date range, so the scheduler never starts a run by itself.

    Returns:
        The project file, written into ``projects``.
    """
    raw = yaml.safe_load((REPO_ROOT / "projects" / "flights.yaml").read_text())
    raw["name"] = name
    raw["registered_model"] = name
    raw["data"]["root_uri"] = f"s3://{bucket}/{name}"
    raw["schedule"] = {"cron": "0 3 * * 1", "start_date": "2013-01-08", "end_date": "2013-01-08T01:00:00Z"}
    projects.mkdir(parents=True, exist_ok=True)
    path = projects / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def production_projects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of project files the module's stack runs: one demo project on S3 with a unique name."""
    folder = tmp_path_factory.mktemp("projects")
    write_s3_project(folder, f"prod_{secrets.token_hex(3)}")
    return folder


@pytest.fixture(scope="module")
def production_env() -> dict[str, str]:
    """Further environment of every Airflow process of the module's stack (a module may override it)."""
    return {}


@pytest.fixture(scope="module")
def production(
    production_projects: Path, production_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProductionStack]:
    """A running production stack over ``production_projects``; stopped and cleaned up after the module."""
    root = tmp_path_factory.mktemp("production")
    started = time.monotonic()
    try:
        with (
            production_stack(root, production_projects, extra_env=production_env) as stack,
            pytest.MonkeyPatch.context() as patch,
        ):
            up = time.monotonic() - started
            print(f"\nproduction stack {stack.run_id} up in {up:.0f} s (logs in {stack.log_dir})")
            # Requests to the stack's machines must not go through a proxy of the caller's environment.
            no_proxy = ",".join([stack.host_ip, *stack.worker_ips, stack.subnet, os.environ.get("NO_PROXY", "")])
            patch.setenv("NO_PROXY", no_proxy.rstrip(","))
            patch.setenv("no_proxy", no_proxy.rstrip(","))
            yield stack
            stopping = time.monotonic()
        print(f"\nproduction stack stopped and cleaned up in {time.monotonic() - stopping:.0f} s")
    except StackUnavailable as error:
        _unavailable(str(error))


@pytest.fixture(scope="module")
def production_client(production: ProductionStack) -> Iterator[AirflowClient]:
    """The stack's Airflow REST API, logged in as the admin."""
    with production.airflow_client(poll_interval=1.0) as client:
        yield client


@pytest.fixture(scope="module")
def platform_s3(production: ProductionStack) -> Iterator[dict[str, str]]:
    """This process talks to the object store as the ``platform`` identity (as the Airflow tasks do)."""
    from retrainer import storage

    with pytest.MonkeyPatch.context() as patch:
        for key, value in production.s3_env().items():
            patch.setenv(key, value)
        storage._s3_client.cache_clear()  # it caches a client built from the environment it first saw
        yield production.s3_env()
    storage._s3_client.cache_clear()
