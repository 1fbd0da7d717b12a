"""A full disk, for real: the data root and the MLflow server's artifact store on small tmpfs mounts, filled up.

Mounting needs root (CI runs as root); elsewhere these tests skip, saying why, and in CI they fail instead.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import steps
from retrainer.catalog import BatchStatus
from retrainer.tracking import Tracking
from tests.helpers import MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.faults]

NO_SERVING = {"serving": {"enabled": False}}


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``folder`` for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs to fill up ({mounted.stderr.strip() or 'needs root'})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextmanager
def filled(folder: Path) -> Iterator[None]:
    """Fill the file system of ``folder`` to the last byte for the block, then free the space again."""
    filler = folder / "filler.bin"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # unbuffered: every byte that fits is written, then ENOSPC
            chunk = b"\0" * size
            try:
                while True:
                    os.write(descriptor, chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    finally:
        os.close(descriptor)
    try:
        yield
    finally:
        filler.unlink()


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("disks")
    with small_disk(root / "data_disk", "24m") as data, small_disk(root / "artifact_disk", "24m") as artifacts:
        yield SimpleNamespace(data=data, artifacts=artifacts, root=root)


@pytest.fixture(scope="module")
def server(disks: SimpleNamespace) -> Iterator[MlflowServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        patch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        patch.setenv("RETRAINER_CODE_VERSION", "fault-tier")
        folder = disks.root / "mlflow"
        folder.mkdir()
        mlflow_server = MlflowServer(folder, artifacts=disks.artifacts)
        mlflow_server.start()
        try:
            yield mlflow_server
        finally:
            mlflow_server.stop()


@pytest.fixture
def mlflow(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracking]:
    from tests.conftest import reset_mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    yield Tracking(server.url)
    reset_mlflow()


def _hashes(project: Any) -> dict[str, str]:
    records = [r for r in project.catalog.all() if r.status is BatchStatus.ACCEPTED]
    for record in records:
        assert hashlib.sha256(Path(record.uri).read_bytes()).hexdigest() == record.sha256, record.batch_id
    return {r.batch_id: r.sha256 for r in records}


def test_a_full_data_root_refuses_the_landed_batch_without_losing_it_and_the_rerun_ingests_it(
    disks: SimpleNamespace, mlflow: Tracking, synth: SimpleNamespace
) -> None:
    project = synth.make_project(disks.data / "full_data_root", "full_data_root", promotion=NO_SERVING)
    context = synth.context_with_suite(disks.root / "gx", "full_data_root")  # not on the full disk
    project.land_and_accept(range(2))
    first = steps.train(project.config, mlflow, synth.cutoff_after(1), "first")
    assert steps.promote(
        project.config, mlflow, first.run_id, steps.evaluate(project.config, mlflow, first.run_id)
    )
    hashes = _hashes(project)
    landing = Path(project.catalog.landing)
    landing.mkdir(parents=True, exist_ok=True)
    new_batch = synth.week(2, 400)
    new_batch.to_parquet(landing / f"{synth.batch_id(2)}.parquet", index=False)
    landed = (landing / f"{synth.batch_id(2)}.parquet").read_bytes()

    with filled(disks.data), pytest.raises(Exception, match=r"No space left on device|\[Errno 28\]"):
        steps.run_cycle(project.config, mlflow, synth.cutoff_after(2), "on_a_full_disk", context_root=context)
    # The landed file is where it was, byte for byte; nothing accepted changed; the champion stayed.
    assert (landing / f"{synth.batch_id(2)}.parquet").read_bytes() == landed
    assert _hashes(project) == hashes
    assert str(steps.champion_version(mlflow.client(), project.config).version) == "1"

    record = steps.run_cycle(project.config, mlflow, synth.cutoff_after(2), "on_a_full_disk", context_root=context)
    assert record.error is None and record.decision is not None, record.error
    assert project.catalog.get(synth.batch_id(2)).status is BatchStatus.ACCEPTED
    assert record.attempt == 1  # the failed attempt could not be recorded on the full disk: it said so in its log
    assert {**hashes, synth.batch_id(2): project.catalog.get(synth.batch_id(2)).sha256} == _hashes(project)


def test_a_full_artifact_store_fails_the_candidate_and_leaves_the_champion_and_the_rerun_completes(
    disks: SimpleNamespace,
    mlflow: Tracking,
    synthetic_project: Callable[..., Any],
    synth: SimpleNamespace,
) -> None:
    project = synthetic_project("full_artifacts", promotion=NO_SERVING)
    project.land_and_accept(range(3))
    first = steps.train(project.config, mlflow, synth.cutoff_after(1), "first")
    assert steps.promote(
        project.config, mlflow, first.run_id, steps.evaluate(project.config, mlflow, first.run_id)
    )
    hashes = _hashes(project)
    with (
        filled(disks.artifacts),
        pytest.raises(Exception, match=r"No space left on device|\[Errno 28\]|500|reset by peer"),
    ):
        # The server fails the upload (its log says: No space left on device); the client sees a 500 or a reset.
        steps.train(project.config, mlflow, synth.cutoff_after(2), "second")
    client = mlflow.client()
    experiment = client.get_experiment_by_name(project.config.name).experiment_id
    [failed] = client.search_runs([experiment], "tags.`retrainer.cycle_id` = 'second'")
    assert str(steps.champion_version(client, project.config).version) == "1"
    assert (
        client.search_model_versions(f"name='{project.config.model_name}' and run_id='{failed.info.run_id}'") == []
    )

    # Ended FAILED by the trainer, or (when the reset cut that call off too) closed as abandoned by the rerun.
    rerun = steps.train(project.config, mlflow, synth.cutoff_after(2), "second")
    assert client.get_run(failed.info.run_id).info.status in {"FAILED", "KILLED"}
    decision = steps.promote(
        project.config, mlflow, rerun.run_id, steps.evaluate(project.config, mlflow, rerun.run_id)
    )
    assert decision.version == "2"
    assert _hashes(project) == hashes
