"""Object storage for batches and reports: a local folder or an ``s3://`` prefix, behind one small API.

S3 goes through boto3; its endpoint and credentials come from the usual AWS environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), never from configuration files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class StorageError(RuntimeError):
    """A read, write or move in the batch store failed."""


def is_s3(uri: str) -> bool:
    """Whether ``uri`` names an S3 object or prefix."""
    return uri.startswith("s3://")


def join(root: str, *parts: str) -> str:
    """Join path parts onto a local folder or an S3 prefix."""
    if is_s3(root):
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(root, *parts))


def basename(uri: str) -> str:
    """Last component of a path or object key."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} has no bucket name")
    return bucket, key


@cache
def _s3_client() -> Any:
    import boto3

    # A session of its own: boto3's default session keeps the first credentials it loaded, whatever the
    # environment says later.
    return boto3.session.Session().client("s3")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the content hash that versions a batch."""
    return hashlib.sha256(data).hexdigest()


_CHUNK = 8 * 1024 * 1024


def sha256_of(uri: str) -> str:
    """Hex SHA-256 of a file or object, read in chunks (memory stays bounded whatever its size).

    Raises:
        StorageError: It does not exist or cannot be read.
    """
    digest = hashlib.sha256()
    try:
        if not is_s3(uri):
            with Path(uri).open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
        else:
            bucket, key = _split_s3(uri)
            for chunk in _s3_client().get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(_CHUNK):
                digest.update(chunk)
    except Exception as error:
        raise StorageError(f"cannot read {uri}: {error}") from error
    return digest.hexdigest()


def exists(uri: str) -> bool:
    """Whether a file or object exists."""
    if not is_s3(uri):
        return Path(uri).is_file()
    from botocore.exceptions import ClientError

    bucket, key = _split_s3(uri)
    try:
        _s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise StorageError(f"cannot check {uri}: {error}") from error
    return True


def size(uri: str) -> int:
    """Size of a file or object in bytes, without reading it.

    Raises:
        StorageError: It does not exist or cannot be reached.
    """
    try:
        if not is_s3(uri):
            return Path(uri).stat().st_size
        bucket, key = _split_s3(uri)
        return int(_s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
    except Exception as error:
        raise StorageError(f"cannot read the size of {uri}: {error}") from error


def read_bytes(uri: str) -> bytes:
    """Read a whole file or object.

    Raises:
        StorageError: It does not exist or cannot be read.
    """
    try:
        if not is_s3(uri):
            return Path(uri).read_bytes()
        bucket, key = _split_s3(uri)
        return _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        raise StorageError(f"cannot read {uri}: {error}") from error


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask can only be read by setting it


def _write_temporary(path: Path, data: bytes) -> str:
    """``data`` in a new temporary file beside ``path`` (same file system: it can be renamed or linked)."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
    # Temporary files are private (0600); give the file the usual mode, so that other users (a training
    # container's non-root user, a mounted volume) can read the batch store.
    os.chmod(tmp.name, 0o666 & ~_UMASK)
    return tmp.name


def write_bytes(uri: str, data: bytes, *, overwrite: bool = True) -> None:
    """Write a whole file or object; local writes are atomic (temporary file, then rename).

    Args:
        uri: Destination.
        data: Content.
        overwrite: If False and the destination exists with different content, refuse.

    Raises:
        StorageError: The write failed, or it would change an immutable file.
    """
    if not overwrite and exists(uri):
        if sha256_bytes(read_bytes(uri)) == sha256_bytes(data):
            return
        raise StorageError(f"{uri} already exists with different content; batches are immutable")
    try:
        if is_s3(uri):
            bucket, key = _split_s3(uri)
            _s3_client().put_object(Bucket=bucket, Key=key, Body=data)
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(_write_temporary(path, data), path)
    except StorageError:
        raise
    except Exception as error:
        raise StorageError(f"cannot write {uri}: {error}") from error


class ConflictError(StorageError):
    """A conditional write lost a race: the object exists already, or changed since it was read."""


def _precondition_failed(error: Exception) -> bool:
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    return code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def create_bytes(uri: str, data: bytes) -> bool:
    """Write a file or object only if nothing is there yet, atomically (the check and the write are one step).

    On S3 this is a ``PutObject`` with ``If-None-Match: *``; locally a temporary file hard-linked into place,
    which fails if the name exists. Two writers racing for the same name: exactly one wins.

    Returns:
        True when this call created it, False when it already existed (its content is left alone).

    Raises:
        StorageError: The write failed for another reason.
    """
    try:
        if is_s3(uri):
            bucket, key = _split_s3(uri)
            try:
                _s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            except Exception as error:
                if _precondition_failed(error):
                    return False
                raise
            return True
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_temporary(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    except Exception as error:
        raise StorageError(f"cannot create {uri}: {error}") from error


def read_versioned(uri: str) -> tuple[bytes, str]:
    """Read a file or object with a version token for :func:`replace_bytes` (the ETag on S3, a hash locally).

    Raises:
        StorageError: It does not exist or cannot be read.
    """
    if not is_s3(uri):
        data = read_bytes(uri)
        return data, sha256_bytes(data)
    try:
        bucket, key = _split_s3(uri)
        response = _s3_client().get_object(Bucket=bucket, Key=key)
        return response["Body"].read(), response["ETag"]
    except Exception as error:
        raise StorageError(f"cannot read {uri}: {error}") from error


def replace_bytes(uri: str, data: bytes, version: str) -> None:
    """Overwrite a file or object only if it is still the version read by :func:`read_versioned`.

    On S3 this is a ``PutObject`` with ``If-Match: <etag>``; locally the check and the atomic rename happen
    under a lock file beside it (``filelock``), which every writer of the folder takes.

    Raises:
        ConflictError: Someone changed it since it was read (read it again and redo the change).
        StorageError: The write failed for another reason.
    """
    try:
        if is_s3(uri):
            bucket, key = _split_s3(uri)
            try:
                _s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfMatch=version)
            except Exception as error:
                if _precondition_failed(error):
                    raise ConflictError(f"{uri} changed since it was read") from None
                raise
            return
        from filelock import FileLock

        path = Path(uri)
        with FileLock(path.parent / f".{path.name}.lock", timeout=60):
            if not path.is_file() or sha256_bytes(path.read_bytes()) != version:
                raise ConflictError(f"{uri} changed since it was read")
            os.replace(_write_temporary(path, data), path)
    except StorageError:
        raise
    except Exception as error:
        raise StorageError(f"cannot write {uri}: {error}") from error


def delete(uri: str) -> None:
    """Remove a file or object; nothing happens when it is already gone."""
    try:
        if is_s3(uri):
            bucket, key = _split_s3(uri)
            _s3_client().delete_object(Bucket=bucket, Key=key)
        else:
            Path(uri).unlink(missing_ok=True)
    except Exception as error:
        raise StorageError(f"cannot delete {uri}: {error}") from error


def list_names(prefix: str, *, start_after: str | None = None, limit: int | None = None) -> list[str]:
    """Names directly under a folder or S3 prefix, in name order, from after ``start_after``, at most ``limit``.

    On S3 only the pages needed are requested (``StartAfter``, ``MaxKeys``), so reading the first few names
    of a large prefix costs one request.
    """
    if not is_s3(prefix):
        folder = Path(prefix)
        if not folder.is_dir():
            return []
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        names = [n for n in names if start_after is None or n > start_after]
        return names if limit is None else names[:limit]
    bucket, key = _split_s3(prefix)
    key = key.rstrip("/") + "/" if key else ""
    names: list[str] = []
    arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": key, "Delimiter": "/"}
    if start_after is not None:
        arguments["StartAfter"] = key + start_after
    while True:
        if limit is not None:
            arguments["MaxKeys"] = min(1000, limit - len(names))
        page = _s3_client().list_objects_v2(**arguments)
        names += [item["Key"][len(key) :] for item in page.get("Contents", []) if item["Key"] != key]
        if not page.get("IsTruncated") or (limit is not None and len(names) >= limit):
            return names if limit is None else names[:limit]
        arguments["ContinuationToken"] = page["NextContinuationToken"]


def list_files(prefix: str, pattern: str = "*", *, hidden: bool = False) -> list[str]:
    """Files directly under a folder or S3 prefix whose name matches a glob, sorted by name.

    Local names starting with a dot (temporary files of atomic writes, lock files) are listed only with
    ``hidden``; the glob is matched case-sensitively, as the file system would.
    """
    if not is_s3(prefix):
        folder = Path(prefix)
        if not folder.is_dir():
            return []
        return sorted(
            str(p)
            for p in folder.iterdir()
            if p.is_file() and (hidden or not p.name.startswith(".")) and fnmatch.fnmatchcase(p.name, pattern)
        )
    bucket, key = _split_s3(prefix)
    key = key.rstrip("/") + "/" if key else ""
    names: list[str] = []
    paginator = _s3_client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
        for item in page.get("Contents", []):
            name = item["Key"][len(key) :]
            if name and fnmatch.fnmatchcase(name, pattern):
                names.append(f"s3://{bucket}/{item['Key']}")
    return sorted(names)


def move(src: str, dst: str) -> None:
    """Move a file: copy, check the copy's hash, only then remove the source, so nothing is ever lost.

    Raises:
        StorageError: The copy failed or does not match; the source is left in place.
    """
    if src == dst:
        raise StorageError(f"cannot move {src} onto itself")
    if not is_s3(src) and not is_s3(dst):
        _move_local(Path(src), Path(dst))
        return
    data = read_bytes(src)
    write_bytes(dst, data, overwrite=False)
    if sha256_bytes(read_bytes(dst)) != sha256_bytes(data):
        raise StorageError(f"copy of {src} at {dst} does not match; the source was kept")
    if is_s3(src):
        bucket, key = _split_s3(src)
        _s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        Path(src).unlink()


def _move_local(src: Path, dst: Path) -> None:
    """:func:`move` between local paths, copying in chunks (a file of any size moves in bounded memory)."""
    expected = sha256_of(str(src))
    if dst.exists():
        if sha256_of(str(dst)) != expected:
            raise StorageError(f"{dst} already exists with different content; batches are immutable")
    else:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = _write_temporary(dst, b"")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except Exception as error:
            raise StorageError(f"cannot write {dst}: {error}") from error
        if sha256_of(str(dst)) != expected:
            raise StorageError(f"copy of {src} at {dst} does not match; the source was kept")
    src.unlink()


def read_parquet(uri: str) -> pd.DataFrame:
    """Read a Parquet file or object into a DataFrame."""
    import pandas as pd

    return pd.read_parquet(io.BytesIO(read_bytes(uri)))


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise a DataFrame as Parquet bytes (no index)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def upload_folder(src: Path, dst: str) -> list[str]:
    """Copy every file of a local folder (not recursive) under a folder or S3 prefix.

    Returns:
        The destination URIs written.
    """
    written = []
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        target = join(dst, path.name)
        write_bytes(target, path.read_bytes())
        written.append(target)
    return written
