"""Object storage for batches and reports: a local folder or an ``s3://`` prefix, behind one small API.

S3 goes through boto3; its endpoint and credentials come from the usual AWS environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), never from configuration files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
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

    return boto3.client("s3")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the content hash that versions a batch."""
    return hashlib.sha256(data).hexdigest()


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
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
            tmp.write(data)
        # Temporary files are private (0600); give the file the usual mode, so that other users (a training
        # container's non-root user, a mounted volume) can read the batch store.
        os.chmod(tmp.name, 0o666 & ~_UMASK)
        os.replace(tmp.name, path)
    except StorageError:
        raise
    except Exception as error:
        raise StorageError(f"cannot write {uri}: {error}") from error


def list_files(prefix: str, pattern: str = "*") -> list[str]:
    """Files directly under a folder or S3 prefix whose name matches a glob, sorted by name."""
    if not is_s3(prefix):
        folder = Path(prefix)
        if not folder.is_dir():
            return []
        return sorted(str(p) for p in folder.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern))
    bucket, key = _split_s3(prefix)
    key = key.rstrip("/") + "/" if key else ""
    names: list[str] = []
    paginator = _s3_client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
        for item in page.get("Contents", []):
            name = item["Key"][len(key) :]
            if name and fnmatch.fnmatch(name, pattern):
                names.append(f"s3://{bucket}/{item['Key']}")
    return sorted(names)


def move(src: str, dst: str) -> None:
    """Move a file: copy, check the copy's hash, only then remove the source, so nothing is ever lost.

    Raises:
        StorageError: The copy failed or does not match; the source is left in place.
    """
    if src == dst:
        raise StorageError(f"cannot move {src} onto itself")
    data = read_bytes(src)
    write_bytes(dst, data, overwrite=False)
    if sha256_bytes(read_bytes(dst)) != sha256_bytes(data):
        raise StorageError(f"copy of {src} at {dst} does not match; the source was kept")
    if is_s3(src):
        bucket, key = _split_s3(src)
        _s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        Path(src).unlink()


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
