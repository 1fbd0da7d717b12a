"""Unit tests of retrainer.storage on a local folder and on S3 (moto), plus a catalog round trip on S3."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from retrainer import storage
from retrainer.catalog import BatchStatus, Catalog
from retrainer.storage import StorageError

BUCKET = "retrainer-test"  # created by the `s3` fixture (tests/conftest.py)


# -- local --------------------------------------------------------------------------------------------------
def test_local_write_then_read_round_trips_and_creates_folders(tmp_path: Path) -> None:
    uri = str(tmp_path / "a" / "b" / "file.bin")
    storage.write_bytes(uri, b"hello")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"hello"


def test_local_write_makes_files_others_can_read(tmp_path: Path) -> None:
    # A training container runs as another user and reads the batch store through a read-only mount.
    uri = str(tmp_path / "catalog" / "batch.json")
    storage.write_bytes(uri, b"{}")
    assert Path(uri).stat().st_mode & 0o044 == 0o044 & ~storage._UMASK


def test_local_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    storage.write_bytes(str(tmp_path / "file.bin"), b"x")
    storage.write_bytes(str(tmp_path / "file.bin"), b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_local_exists_is_false_for_missing_files_and_folders(tmp_path: Path) -> None:
    assert not storage.exists(str(tmp_path / "missing"))
    assert not storage.exists(str(tmp_path))  # a folder is not a file


def test_local_read_of_a_missing_file_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        storage.read_bytes(str(tmp_path / "missing"))


def test_local_list_files_filters_by_pattern_sorted_and_not_recursive(tmp_path: Path) -> None:
    for name in ["b.parquet", "a.parquet", "c.json"]:
        storage.write_bytes(str(tmp_path / name), b"x")
    storage.write_bytes(str(tmp_path / "sub" / "d.parquet"), b"x")
    assert storage.list_files(str(tmp_path), "*.parquet") == [
        str(tmp_path / "a.parquet"),
        str(tmp_path / "b.parquet"),
    ]
    assert len(storage.list_files(str(tmp_path))) == 3


def test_local_list_files_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert storage.list_files(str(tmp_path / "nowhere")) == []


def test_local_move_keeps_content_and_removes_source(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "landing" / "b.parquet"), str(tmp_path / "quarantine" / "b" / "b.parquet")
    storage.write_bytes(src, b"batch")
    storage.move(src, dst)
    assert not storage.exists(src)
    assert storage.read_bytes(dst) == b"batch"


def test_local_move_onto_an_identical_file_removes_only_the_source(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src.bin"), str(tmp_path / "dst.bin")
    storage.write_bytes(src, b"same")
    storage.write_bytes(dst, b"same")
    storage.move(src, dst)
    assert not storage.exists(src)
    assert storage.read_bytes(dst) == b"same"


def test_local_move_refuses_to_overwrite_a_different_file_and_keeps_both(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src.bin"), str(tmp_path / "dst.bin")
    storage.write_bytes(src, b"new")
    storage.write_bytes(dst, b"old")
    with pytest.raises(StorageError, match="already exists with different content"):
        storage.move(src, dst)
    assert storage.read_bytes(src) == b"new"
    assert storage.read_bytes(dst) == b"old"


def test_local_move_of_a_missing_source_raises_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        storage.move(str(tmp_path / "missing"), str(tmp_path / "dst"))
    assert not storage.exists(str(tmp_path / "dst"))


def test_local_move_onto_itself_keeps_the_file(tmp_path: Path) -> None:
    uri = str(tmp_path / "only.bin")
    storage.write_bytes(uri, b"precious")
    with contextlib.suppress(StorageError):  # refusing is fine too; losing the file is not
        storage.move(uri, uri)
    assert storage.exists(uri)


def test_immutable_write_with_same_content_is_a_no_op(tmp_path: Path) -> None:
    uri = str(tmp_path / "batch.parquet")
    storage.write_bytes(uri, b"v1", overwrite=False)
    mtime = Path(uri).stat().st_mtime_ns
    storage.write_bytes(uri, b"v1", overwrite=False)
    assert storage.read_bytes(uri) == b"v1"
    assert Path(uri).stat().st_mtime_ns == mtime


def test_immutable_write_with_different_content_raises_and_keeps_the_original(tmp_path: Path) -> None:
    uri = str(tmp_path / "batch.parquet")
    storage.write_bytes(uri, b"v1", overwrite=False)
    with pytest.raises(StorageError, match="batches are immutable"):
        storage.write_bytes(uri, b"v2", overwrite=False)
    assert storage.read_bytes(uri) == b"v1"


def test_overwrite_is_the_default(tmp_path: Path) -> None:
    uri = str(tmp_path / "report.json")
    storage.write_bytes(uri, b"1")
    storage.write_bytes(uri, b"2")
    assert storage.read_bytes(uri) == b"2"


def test_join_and_basename_for_local_and_s3() -> None:
    assert storage.join("s3://bucket/root/", "/landing/", "b.parquet") == "s3://bucket/root/landing/b.parquet"
    assert storage.join("/data/root", "landing", "b.parquet") == str(Path("/data/root/landing/b.parquet"))
    assert storage.basename("s3://bucket/root/landing/b.parquet") == "b.parquet"
    assert storage.basename("/data/root/landing/") == "landing"
    assert storage.is_s3("s3://bucket") and not storage.is_s3("/tmp/s3://x")


def test_sha256_bytes_is_the_hex_digest() -> None:
    assert storage.sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_parquet_bytes_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, None], "b": ["x", "y"]})
    uri = str(tmp_path / "f.parquet")
    storage.write_bytes(uri, storage.parquet_bytes(frame))
    pd.testing.assert_frame_equal(storage.read_parquet(uri), frame)


def test_upload_folder_copies_every_file_but_not_subfolders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "report.html").write_text("<html/>")
    (src / "summary.json").write_text("{}")
    (src / "nested" / "skip.txt").write_text("no")
    written = storage.upload_folder(src, str(tmp_path / "dst"))
    assert written == [str(tmp_path / "dst" / "report.html"), str(tmp_path / "dst" / "summary.json")]
    assert storage.read_bytes(written[1]) == b"{}"


# -- S3 (moto) ----------------------------------------------------------------------------------------------
def test_s3_write_read_exists(s3: Any) -> None:
    uri = f"s3://{BUCKET}/prefix/a.bin"
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"payload")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"payload"
    assert s3.get_object(Bucket=BUCKET, Key="prefix/a.bin")["Body"].read() == b"payload"


def test_s3_read_of_a_missing_object_raises_storage_error(s3: Any) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        storage.read_bytes(f"s3://{BUCKET}/prefix/missing.bin")


def test_s3_uri_without_bucket_is_rejected(s3: Any) -> None:
    with pytest.raises(StorageError, match="no bucket"):
        storage.read_bytes("s3:///key")


def test_s3_list_files_is_one_level_filtered_and_sorted(s3: Any) -> None:
    for key in [
        "prefix/b.parquet",
        "prefix/a.parquet",
        "prefix/c.json",
        "prefix/sub/d.parquet",
        "other/e.parquet",
    ]:
        storage.write_bytes(f"s3://{BUCKET}/{key}", b"x")
    assert storage.list_files(f"s3://{BUCKET}/prefix", "*.parquet") == [
        f"s3://{BUCKET}/prefix/a.parquet",
        f"s3://{BUCKET}/prefix/b.parquet",
    ]
    assert storage.list_files(f"s3://{BUCKET}/prefix/") == [
        f"s3://{BUCKET}/prefix/a.parquet",
        f"s3://{BUCKET}/prefix/b.parquet",
        f"s3://{BUCKET}/prefix/c.json",
    ]
    assert storage.list_files(f"s3://{BUCKET}/empty") == []


def test_s3_move_keeps_content_and_removes_source(s3: Any) -> None:
    src, dst = f"s3://{BUCKET}/root/landing/b.parquet", f"s3://{BUCKET}/root/quarantine/b/b.parquet"
    storage.write_bytes(src, b"batch")
    storage.move(src, dst)
    assert not storage.exists(src)
    assert storage.read_bytes(dst) == b"batch"


def test_s3_move_refuses_to_overwrite_a_different_object(s3: Any) -> None:
    src, dst = f"s3://{BUCKET}/src.bin", f"s3://{BUCKET}/dst.bin"
    storage.write_bytes(src, b"new")
    storage.write_bytes(dst, b"old")
    with pytest.raises(StorageError, match="already exists with different content"):
        storage.move(src, dst)
    assert storage.read_bytes(src) == b"new"
    assert storage.read_bytes(dst) == b"old"


def test_s3_immutable_write_rules(s3: Any) -> None:
    uri = f"s3://{BUCKET}/landing/b.parquet"
    storage.write_bytes(uri, b"v1", overwrite=False)
    storage.write_bytes(uri, b"v1", overwrite=False)
    with pytest.raises(StorageError, match="batches are immutable"):
        storage.write_bytes(uri, b"v2", overwrite=False)
    assert storage.read_bytes(uri) == b"v1"


def test_catalog_round_trip_on_s3(s3: Any, synthetic_project: Callable[..., Any], synth: SimpleNamespace) -> None:
    project = synthetic_project(root_uri=f"s3://{BUCKET}/projects/synthetic")
    assert project.config.data.root_uri == f"s3://{BUCKET}/projects/synthetic"
    ids = project.land(range(2), rows=60)
    catalog = project.catalog
    records = catalog.register_new()
    assert [r.batch_id for r in records] == ids
    assert all(r.status is BatchStatus.LANDED and r.uri.startswith(f"s3://{BUCKET}/") for r in records)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {f"projects/synthetic/batches/{b}.parquet" for b in ids} <= keys
    assert {f"projects/synthetic/catalog/{b}.json" for b in ids} <= keys
    for batch in ids:
        Catalog(project.config).accept(batch, {"success": True})
    frame = catalog.load(catalog.window(synth.cutoff_after(1), 4))
    assert len(frame) == 120
    assert str(frame["ts"].dt.tz) == "UTC"


# -- conditional writes: what lets several workers change the catalog at once --------------------------------
@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A folder or an S3 prefix (moto), for tests that must hold on both."""
    return str(tmp_path) if request.param == "local" else request.getfixturevalue("s3_bucket") + "/conditional"


def test_create_bytes_creates_once_and_never_overwrites(root: str) -> None:
    uri = storage.join(root, "catalog", "b.json")
    assert storage.create_bytes(uri, b"first") is True
    assert storage.create_bytes(uri, b"second") is False
    assert storage.read_bytes(uri) == b"first"


def test_create_bytes_lets_exactly_one_of_racing_writers_win(tmp_path: Path) -> None:
    # A real folder (moto is not safe for threads; the production tier races a real S3 server).
    from concurrent.futures import ThreadPoolExecutor

    uri = storage.join(str(tmp_path), "race.json")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: storage.create_bytes(uri, f"writer {i}".encode()), range(16)))
    assert won.count(True) == 1
    assert storage.read_bytes(uri) == f"writer {won.index(True)}".encode()


def test_replace_bytes_refuses_a_version_that_changed_meanwhile(root: str) -> None:
    uri = storage.join(root, "record.json")
    storage.write_bytes(uri, b"v1")
    data, version = storage.read_versioned(uri)
    assert data == b"v1"
    storage.replace_bytes(uri, b"v2", version)
    with pytest.raises(storage.ConflictError, match="changed since it was read"):
        storage.replace_bytes(uri, b"v3", version)  # a second writer with the stale version
    assert storage.read_bytes(uri) == b"v2"
    _, fresh = storage.read_versioned(uri)
    storage.replace_bytes(uri, b"v3", fresh)
    assert storage.read_bytes(uri) == b"v3"


def test_list_names_pages_from_a_start_without_reading_everything(root: str) -> None:
    folder = storage.join(root, "index")
    for name in ("a", "b", "c", "d"):
        storage.write_bytes(storage.join(folder, name), b"")
    storage.write_bytes(storage.join(folder, "sub", "x"), b"")  # not a name of this folder
    assert storage.list_names(folder) == ["a", "b", "c", "d"]
    assert storage.list_names(folder, start_after="b") == ["c", "d"]
    assert storage.list_names(folder, start_after="a", limit=2) == ["b", "c"]
    assert storage.list_names(storage.join(root, "missing")) == []
    storage.delete(storage.join(folder, "a"))
    storage.delete(storage.join(folder, "a"))  # already gone: nothing happens
    assert storage.list_names(folder, limit=1) == ["b"]


def test_a_new_s3_client_uses_the_credentials_of_the_environment_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's default session keeps the first credentials it loaded; each client here is built from the current
    environment, so a process that talked to one S3 server never sends its keys to the next."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    keys = []
    for key in ("FIRSTKEY", "SECONDKEY"):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", f"{key}-secret")
        storage._s3_client.cache_clear()
        keys.append(storage._s3_client()._request_signer._credentials.access_key)
    storage._s3_client.cache_clear()
    assert keys == ["FIRSTKEY", "SECONDKEY"]
