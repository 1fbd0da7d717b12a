"""Unit tests of retrainer.catalog: registration, validation outcomes, quarantine, windows and hash checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from retrainer import storage
from retrainer.catalog import BatchRecord, BatchStatus, Catalog, CatalogError


@pytest.fixture
def project(synthetic_project: Callable[..., Any]) -> Any:
    return synthetic_project()


def _files(root: str) -> dict[str, str]:
    """Every file under a local root (name -> sha256), excluding catalog records and reports."""
    return {
        path.name: storage.sha256_bytes(path.read_bytes())
        for path in Path(root).rglob("*")
        if path.is_file() and path.suffix == ".parquet"
    }


# -- registration -------------------------------------------------------------------------------------------
def test_register_new_records_hash_rows_and_period(project: Any, synth: SimpleNamespace) -> None:
    frame = synth.week(0, 50)
    landed = project.catalog.land(synth.batch_id(0), frame)
    data = Path(landed).read_bytes()
    (record,) = project.catalog.register_new()
    assert record.batch_id == synth.batch_id(0)
    # Moved out of the landing inbox into the platform's own zone, byte for byte.
    assert record.uri == storage.join(project.catalog.batches, f"{synth.batch_id(0)}.parquet")
    assert not Path(landed).exists() and storage.list_files(project.catalog.landing) == []
    assert record.sha256 == storage.sha256_bytes(data) == storage.sha256_bytes(Path(record.uri).read_bytes())
    assert record.rows == 50
    assert record.status is BatchStatus.LANDED
    assert datetime.fromisoformat(record.period_start) == frame["ts"].min()
    assert datetime.fromisoformat(record.period_end) == frame["ts"].max()
    assert record.registered_at and record.validated_at is None


def test_register_new_persists_records_and_is_idempotent(project: Any) -> None:
    ids = project.land(range(2), rows=30)
    assert [r.batch_id for r in project.catalog.register_new()] == ids
    assert project.catalog.register_new() == []
    reloaded = Catalog(project.config)
    assert [r.batch_id for r in reloaded.all()] == ids
    assert reloaded.get(ids[0]) == project.catalog.get(ids[0])


def test_register_new_returns_oldest_period_first(project: Any, synth: SimpleNamespace) -> None:
    # Batch ids that sort the other way round from their periods.
    project.catalog.land("b_old", synth.week(0, 20))
    project.catalog.land("a_new", synth.week(3, 20))
    assert [r.batch_id for r in project.catalog.register_new()] == ["b_old", "a_new"]


def test_naive_timestamps_are_refused_unless_the_project_names_their_zone(
    project: Any, synth: SimpleNamespace, tmp_path: Any
) -> None:
    import dataclasses

    frame = synth.week(0, 20)
    frame["ts"] = frame["ts"].dt.tz_localize(None)
    project.catalog.land("naive", frame)
    (record,) = project.catalog.register_new()
    assert record.status is BatchStatus.QUARANTINED
    assert (
        "have no time zone" in record.validation["error"] and "schema.naive_timezone" in record.validation["error"]
    )
    zoned = dataclasses.replace(
        project,
        config=project.config.model_copy(
            update={
                "schema_": project.config.schema_.model_copy(update={"naive_timezone": "America/New_York"}),
                "data": project.config.data.model_copy(update={"root_uri": str(tmp_path / "zoned")}),
            }
        ),
    )
    zoned.catalog.land("naive", frame)
    (record,) = zoned.catalog.register_new()
    assert record.status is BatchStatus.LANDED
    assert record.period_end_ts == frame["ts"].max().tz_localize("America/New_York")


def test_land_refuses_other_content_under_an_existing_batch_id(project: Any, synth: SimpleNamespace) -> None:
    project.catalog.land("w", synth.week(0, 20))
    project.catalog.land("w", synth.week(0, 20))  # same content: idempotent
    with pytest.raises(storage.StorageError, match="immutable"):
        project.catalog.land("w", synth.week(1, 20))


def test_get_unknown_batch_raises_catalog_error(project: Any) -> None:
    with pytest.raises(CatalogError, match="'nope' is not in the catalog"):
        project.catalog.get("nope")


def test_batch_record_dict_round_trip(project: Any) -> None:
    project.land(range(1), rows=20)
    (record,) = project.catalog.register_new()
    data = record.to_dict()
    assert json.loads(json.dumps(data))["status"] == "landed"
    assert BatchRecord.from_dict(data) == record


# -- pending and accept -------------------------------------------------------------------------------------
def test_pending_lists_landed_batches_ended_by_the_cutoff(project: Any, synth: SimpleNamespace) -> None:
    ids = project.land(range(3), rows=20)
    project.catalog.register_new()
    assert [r.batch_id for r in project.catalog.pending(synth.cutoff_after(1))] == ids[:2]
    assert [r.batch_id for r in project.catalog.pending(synth.cutoff_after(2))] == ids
    assert project.catalog.pending(synth.cutoff_after(-1)) == []


def test_accept_records_status_time_and_validation_and_leaves_pending(
    project: Any, synth: SimpleNamespace
) -> None:
    ids = project.land(range(2), rows=20)
    project.catalog.register_new()
    accepted = project.catalog.accept(ids[0], {"success": True, "summary": "12/12 expectations"})
    assert accepted.status is BatchStatus.ACCEPTED
    assert accepted.validated_at
    reloaded = Catalog(project.config).get(ids[0])
    assert reloaded.status is BatchStatus.ACCEPTED
    assert reloaded.validation == {"success": True, "summary": "12/12 expectations"}
    assert [r.batch_id for r in project.catalog.pending(synth.cutoff_after(1))] == [ids[1]]


# -- quarantine ---------------------------------------------------------------------------------------------
def test_quarantine_moves_the_file_with_its_report_and_deletes_nothing(project: Any) -> None:
    ids = project.land(range(2), rows=20)
    catalog = project.catalog
    catalog.register_new()
    before = _files(project.config.data.root_uri)
    landed = catalog.get(ids[0])
    report = {"success": False, "summary": "2 expectations failed", "report": {"failed": ["dep_delay range"]}}

    record = catalog.quarantine_batch(ids[0], report)

    assert not storage.exists(landed.uri)
    assert storage.list_files(catalog.batches, "*.parquet") == [catalog.get(ids[1]).uri]
    folder = storage.join(catalog.quarantine, ids[0])
    target = storage.join(folder, f"{ids[0]}.parquet")
    assert record.uri == target
    assert storage.sha256_bytes(storage.read_bytes(target)) == landed.sha256
    assert json.loads(storage.read_bytes(storage.join(folder, "validation.json"))) == report
    assert record.status is BatchStatus.QUARANTINED
    assert record.validation["report_uri"] == storage.join(folder, "validation.json")
    assert "report" not in record.validation  # the full report lives in the file, not in the catalog
    assert record.validation["summary"] == "2 expectations failed"
    assert _files(project.config.data.root_uri) == before  # same files, same content: nothing lost
    assert catalog.get(ids[0]).status is BatchStatus.QUARANTINED


def test_quarantined_batch_still_loads_from_its_new_place(project: Any) -> None:
    ids = project.land(range(1), rows=20)
    project.catalog.register_new()
    record = project.catalog.quarantine_batch(ids[0], {"success": False})
    assert len(project.catalog.load([record])) == 20


def test_quarantining_twice_keeps_the_file(project: Any) -> None:
    ids = project.land(range(1), rows=20)
    project.catalog.register_new()
    first = project.catalog.quarantine_batch(ids[0], {"success": False, "summary": "first"})
    second = project.catalog.quarantine_batch(ids[0], {"success": False, "summary": "again"})
    assert second.uri == first.uri
    assert storage.sha256_bytes(storage.read_bytes(second.uri)) == first.sha256


def test_quarantined_batch_is_not_pending_again(project: Any, synth: SimpleNamespace) -> None:
    ids = project.land(range(1), rows=20)
    project.catalog.register_new()
    project.catalog.quarantine_batch(ids[0], {"success": False})
    assert project.catalog.pending(synth.cutoff_after(0)) == []
    assert project.catalog.register_new() == []


def test_relanding_a_quarantined_batch_id_with_other_content_is_refused(
    project: Any, synth: SimpleNamespace
) -> None:
    catalog = project.catalog
    catalog.land("w", synth.week(0, 20))
    catalog.register_new()
    quarantined = catalog.quarantine_batch("w", {"success": False})
    with pytest.raises(storage.StorageError, match=r"batch w already landed \(quarantined\) with other content"):
        catalog.land("w", synth.week(0, 25))
    assert storage.list_files(catalog.landing) == []  # nothing left behind that would never be registered
    assert catalog.land("w", synth.week(0, 20)) == quarantined.uri  # the same content again: a no-op
    assert storage.list_files(catalog.landing) == []


# -- unreadable files are quarantined on arrival -------------------------------------------------------------
def test_unreadable_files_are_quarantined_on_registration_and_good_ones_still_register(
    project: Any, synth: SimpleNamespace
) -> None:
    catalog = project.catalog
    good = project.land(range(1), rows=20)[0]
    storage.write_bytes(storage.join(catalog.landing, "garbage.parquet"), b"this is not parquet")
    storage.write_bytes(storage.join(catalog.landing, "empty.parquet"), storage.parquet_bytes(synth.week(1, 0)))
    storage.write_bytes(
        storage.join(catalog.landing, "no_ts.parquet"),
        storage.parquet_bytes(synth.week(1, 10).drop(columns=["ts"])),
    )
    null_ts = synth.week(1, 10).astype({"ts": "object"})
    null_ts["ts"] = None
    storage.write_bytes(storage.join(catalog.landing, "null_ts.parquet"), storage.parquet_bytes(null_ts))
    storage.write_bytes(storage.join(catalog.landing, "notes.txt"), b"not matched by the file pattern")

    records = {r.batch_id: r for r in catalog.register_new()}

    assert set(records) == {good, "garbage", "empty", "no_ts", "null_ts"}
    assert records[good].status is BatchStatus.LANDED and records[good].rows == 20
    expected_errors = {
        "garbage": "is not a readable Parquet file",
        "empty": "has no rows",
        "no_ts": "has no timestamp column 'ts'",
        "null_ts": "holds object values, not timestamps",
    }
    for batch, error in expected_errors.items():
        record = records[batch]
        assert record.status is BatchStatus.QUARANTINED, batch
        assert error in record.validation["error"], batch
        folder = storage.join(catalog.quarantine, batch)
        report = json.loads(storage.read_bytes(storage.join(folder, "validation.json")))
        assert report["success"] is False and error in report["error"]
        assert storage.exists(storage.join(folder, f"{batch}.parquet"))  # moved, not deleted
        assert storage.sha256_bytes(storage.read_bytes(record.uri)) == record.sha256
    assert storage.list_files(catalog.landing, "*") == [storage.join(catalog.landing, "notes.txt")]
    assert storage.list_files(catalog.batches, "*.parquet") == [records[good].uri]
    assert [r.batch_id for r in catalog.pending(synth.cutoff_after(0))] == [good]


def test_a_batch_id_landed_again_is_dropped_or_rejected_never_lost(project: Any, synth: SimpleNamespace) -> None:
    catalog = project.catalog
    [batch] = project.land([0], rows=20)
    [record] = catalog.register_new()
    catalog.accept(batch, {"success": True})
    same = storage.join(catalog.landing, f"{batch}.parquet")
    storage.write_bytes(same, storage.read_bytes(record.uri))  # the same file dropped again (a retry upstream)
    assert catalog.register_new() == []
    assert not storage.exists(same)  # a duplicate of what is stored: dropped
    other = synth.week(0, 25)
    storage.write_bytes(same, storage.parquet_bytes(other))  # "corrected" in place upstream
    assert catalog.register_new() == []
    assert not storage.exists(same)
    [kept] = storage.list_files(storage.join(catalog.landing, "rejected"), "*.parquet")
    assert storage.read_bytes(kept) == storage.parquet_bytes(other)  # kept, with the reason beside it
    reason = storage.read_bytes(f"{kept}.error.txt").decode()
    assert f"batch {batch} is already registered (accepted) with other content" in reason
    assert catalog.get(batch).status is BatchStatus.ACCEPTED
    assert storage.read_bytes(catalog.get(batch).uri) == storage.read_bytes(record.uri)  # untouched


def test_batches_registered_before_the_batches_zone_stay_where_their_record_says(
    project: Any, synth: SimpleNamespace
) -> None:
    import dataclasses

    catalog = project.catalog
    [batch] = project.land([0], rows=20)
    [record] = catalog.register_new()
    legacy = storage.join(catalog.landing, f"{batch}.parquet")
    storage.write_bytes(legacy, storage.read_bytes(record.uri))
    _, version = storage.read_versioned(storage.join(catalog.records, f"{batch}.json"))
    older = json.dumps(dataclasses.replace(record, uri=legacy).to_dict()).encode()
    storage.replace_bytes(storage.join(catalog.records, f"{batch}.json"), older, version)
    assert catalog.register_new() == []
    assert storage.exists(legacy) and catalog.get(batch).uri == legacy
    assert len(catalog.load([catalog.get(batch)])) == 20


# -- windows and loading ------------------------------------------------------------------------------------
def _accept_all(catalog: Catalog, ids: list[str]) -> None:
    for batch in ids:
        catalog.accept(batch, {"success": True})


def test_window_picks_the_newest_accepted_batches_ended_by_the_cutoff(
    project: Any, synth: SimpleNamespace
) -> None:
    ids = project.land(range(6), rows=20)
    catalog = project.catalog
    catalog.register_new()
    _accept_all(catalog, [ids[0], ids[1], ids[3], ids[4], ids[5]])
    catalog.quarantine_batch(ids[2], {"success": False})

    assert [r.batch_id for r in catalog.window(synth.cutoff_after(4), 3)] == [ids[1], ids[3], ids[4]]
    assert [r.batch_id for r in catalog.window(synth.cutoff_after(5), 2)] == [ids[4], ids[5]]
    assert [r.batch_id for r in catalog.window(synth.cutoff_after(2), 10)] == [ids[0], ids[1]]
    assert catalog.window(synth.cutoff_after(-1), 4) == []


def test_window_skips_batches_still_awaiting_validation(project: Any, synth: SimpleNamespace) -> None:
    ids = project.land(range(3), rows=20)
    project.catalog.register_new()
    _accept_all(project.catalog, [ids[0]])
    assert [r.batch_id for r in project.catalog.window(synth.cutoff_after(2), 4)] == [ids[0]]


def test_load_concatenates_batches_with_utc_timestamps(project: Any) -> None:
    ids = project.land(range(2), rows=20)
    project.catalog.register_new()
    frame = project.catalog.load([project.catalog.get(b) for b in ids])
    assert len(frame) == 40
    assert isinstance(frame["ts"].dtype, pd.DatetimeTZDtype) and str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].is_monotonic_increasing


def test_load_reads_only_the_columns_asked_for_and_those_every_step_needs(project: Any) -> None:
    ids = project.land(range(2), rows=20)
    project.catalog.register_new()
    records = [project.catalog.get(b) for b in ids]
    schema = project.config.schema_
    feature = next(c for c in schema.columns if c not in {schema.timestamp, schema.target})
    # A name outside the schema is no column of any batch: left out, as a column a file lacks is.
    frame = project.catalog.load(records, columns=[feature, "not_in_any_file"])
    assert list(frame.columns) == [c for c in schema.columns if c in {feature, schema.timestamp, schema.target}]
    assert len(frame) == 40
    assert frame[feature].equals(project.catalog.load(records)[feature])


def test_load_detects_a_tampered_batch_and_names_it(project: Any, synth: SimpleNamespace) -> None:
    ids = project.land(range(2), rows=20)
    project.catalog.register_new()
    record = project.catalog.get(ids[1])
    Path(record.uri).write_bytes(storage.parquet_bytes(synth.week(1, 21)))  # changed behind the catalog's back
    with pytest.raises(CatalogError, match=rf"batch {ids[1]} at .* changed since it landed"):
        project.catalog.load([project.catalog.get(b) for b in ids])


def test_load_of_nothing_raises(project: Any) -> None:
    with pytest.raises(CatalogError, match="no batches to load"):
        project.catalog.load([])
