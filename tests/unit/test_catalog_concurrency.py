"""The catalog when several processes change it at once, and what its reads cost.

The drift monitor and the weekly cycle register and validate batches of the same project, on different
workers. Records are created only when missing and changed only when unchanged since they were read, so no
update is lost; the index keeps a step's reads independent of how many weeks already landed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from retrainer import storage
from retrainer.catalog import BatchStatus, Catalog, CatalogError


@pytest.fixture(params=["local", "s3"])
def project(request: pytest.FixtureRequest, synthetic_project: Callable[..., Any]) -> Any:
    if request.param == "local":
        return synthetic_project("races")
    return synthetic_project("races", root_uri=request.getfixturevalue("s3_bucket") + "/races")


def test_a_late_registration_cannot_turn_an_accepted_batch_back(
    project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    [batch] = project.land([0], rows=30)
    catalog = project.catalog
    records_folder = catalog.records
    stale = storage.list_files(records_folder, "*.json")  # what a slow ingest listed before the monitor's
    catalog.register_new()
    catalog.accept(batch, {"success": True, "summary": "accepted by the monitor"})

    real_list = storage.list_files
    monkeypatch.setattr(
        storage,
        "list_files",
        lambda prefix, pattern="*", **kw: stale if prefix == records_folder else real_list(prefix, pattern, **kw),
    )
    assert Catalog(project.config).register_new() == []  # it believes the batch is new, but loses the create
    monkeypatch.undo()
    assert catalog.get(batch).status is BatchStatus.ACCEPTED
    assert catalog.get(batch).validation["summary"] == "accepted by the monitor"
    assert catalog.pending(_far_future()) == []


def test_racing_registrations_and_acceptances_lose_nothing(
    synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    # On a real folder; moto's S3 is not safe for threads: the same race on a real S3 server is in
    # tests/integration/production.
    project = synthetic_project("races")
    synth.race_to_register_and_accept(project.config, project.land(range(6), rows=20))


def test_a_change_that_lost_the_race_is_applied_again_to_the_winners_record(project: Any) -> None:
    [batch] = project.land([0], rows=30)
    catalog = project.catalog
    catalog.register_new()
    catalog.accept(batch, {"success": True})
    uri = storage.join(catalog.records, f"{batch}.json")
    seen = []

    def attach(record: Any) -> Any:
        from dataclasses import replace

        seen.append(record.labels)
        if len(seen) == 1:  # another worker attaches labels between our read and our write
            _, version = storage.read_versioned(uri)
            other = json.loads(storage.read_bytes(uri)) | {"registered_at": "changed meanwhile"}
            storage.replace_bytes(uri, json.dumps(other).encode(), version)
        return replace(record, labels={"uri": "labels/x.parquet", "sha256": "0", "rows": 1, "labelled": 1})

    catalog._update(batch, attach)
    record = catalog.get(batch)
    assert len(seen) == 2  # applied again after the conflict
    assert record.labels["uri"] == "labels/x.parquet" and record.registered_at == "changed meanwhile"


def test_quarantine_and_acceptance_of_one_batch_are_exclusive(project: Any) -> None:
    [batch] = project.land([0], rows=30)
    catalog = project.catalog
    catalog.register_new()
    catalog.quarantine_batch(batch, {"batch_id": batch, "success": False, "summary": "failed"})
    with pytest.raises(CatalogError, match="quarantined meanwhile"):
        catalog.accept(batch, {"success": True})
    assert catalog.get(batch).status is BatchStatus.QUARANTINED


def test_the_window_and_pending_batches_come_from_the_index(project: Any, synth: SimpleNamespace) -> None:
    ids = project.land_and_accept(range(5), rows=20)
    pending = project.land([5, 6], rows=20)
    catalog = project.catalog
    catalog.register_new()
    assert [r.batch_id for r in catalog.window(synth.cutoff_after(4), 3)] == ids[2:]
    assert [r.batch_id for r in catalog.window(synth.cutoff_after(2), 2)] == ids[1:3]
    assert catalog.window(synth.cutoff_after(-1), 3) == []
    assert [r.batch_id for r in catalog.pending(synth.cutoff_after(5))] == pending[:1]
    assert [r.batch_id for r in catalog.pending(_far_future())] == pending


def test_ties_on_the_period_end_pick_what_a_full_scan_would(project: Any, synth: SimpleNamespace) -> None:
    catalog = project.catalog
    for name in ("c", "a", "b", "d"):
        catalog.land(name, synth.week(0, 20, seed=ord(name)).assign(ts=synth.week(0, 20)["ts"]))
    catalog.register_new()
    for name in "abcd":
        catalog.accept(name, {"success": True})
    expected = sorted(catalog.all(), key=lambda r: (r.period_end_ts, r.batch_id))[-2:]
    assert catalog.window(_far_future(), 2) == expected


def test_a_catalog_written_before_the_index_is_indexed_once(project: Any, synth: SimpleNamespace) -> None:
    ids = project.land_and_accept(range(3), rows=20)
    catalog = project.catalog
    for name in storage.list_names(catalog.records):  # what an older version of the platform left
        if name == "_index.json":
            storage.delete(storage.join(catalog.records, name))
    for index in ("_accepted", "_landed", "_quarantined", "_labelled"):
        for name in storage.list_names(storage.join(catalog.records, index)):
            storage.delete(storage.join(catalog.records, index, name))
    assert [r.batch_id for r in Catalog(project.config).window(synth.cutoff_after(2), 4)] == ids
    assert storage.exists(storage.join(catalog.records, "_index.json"))


# -- what the reads cost ----------------------------------------------------------------------------------
@contextmanager
def _counting_s3_requests() -> Iterator[list[str]]:
    """Every S3 request storage's client makes inside the block, by operation name."""
    client = storage._s3_client()
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-call.s3", count)
    try:
        yield calls
    finally:
        client.meta.events.unregister("before-call.s3", count)


def test_a_steps_reads_do_not_grow_with_the_weeks_already_landed(
    s3_bucket: str, synthetic_project: Callable[..., Any], synth: SimpleNamespace
) -> None:
    costs = {}
    for weeks in (5, 60):
        project = synthetic_project(f"history_{weeks}", root_uri=f"{s3_bucket}/history_{weeks}")
        project.land_and_accept(range(weeks), rows=5)
        project.land([weeks], rows=5)  # this week's new batch
        cutoff = synth.cutoff_after(weeks)
        catalog = Catalog(project.config)
        with _counting_s3_requests() as window_calls:
            catalog.window(cutoff, 4)
        with _counting_s3_requests() as pending_calls:
            catalog.pending(cutoff)
        costs[weeks] = (len(window_calls), len(pending_calls))
    assert costs[60] == costs[5], costs  # the same requests for 5 weeks of history as for 60
    assert costs[5][0] <= 4 + 2  # a listing and one read per batch of the window (plus the index check)


def _far_future() -> Any:
    from datetime import UTC, datetime

    return datetime(2100, 1, 1, tzinfo=UTC)
