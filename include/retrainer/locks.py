"""Leases on objects of a project's batch store: one holder at a time, across processes and machines.

A lease is one small object (a file, or an S3 object) naming its holder and when it expires. It is taken with a
create-only write, taken over from a holder that died (expired) with a compare-and-swap, and released by its
holder. Each project has its own (e.g. ``<root_uri>/locks/champion.json``), so one project never waits for
another's.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from retrainer import storage


class LockTimeout(RuntimeError):
    """The lease stayed with another holder for longer than the caller would wait."""


class _Held(Exception):
    """Raised inside the retry loop while someone else holds the lease."""


def default_owner(purpose: str) -> str:
    """Who takes a lease: the purpose, this host and this process (shown to whoever waits)."""
    return f"{purpose} on {socket.gethostname()} (pid {os.getpid()})"


@contextmanager
def held(uri: str, owner: str, *, ttl: timedelta = timedelta(minutes=10), wait_s: float = 300.0) -> Iterator[None]:
    """Hold the lease at ``uri`` for the block.

    Args:
        uri: The lease object (a local path or an S3 URI).
        owner: Who holds it, for the error another waiter gets.
        ttl: How long the lease lasts if its holder dies without releasing it.
        wait_s: How long to wait for another holder to release it.

    Raises:
        LockTimeout: Another holder kept it for longer than ``wait_s``.
    """
    token = secrets.token_hex(8)  # this holding, even if another holder has the same owner string
    lease = json.dumps(
        {
            "owner": owner,
            "token": token,
            "taken_at": _now().isoformat(),
            "expires_at": (_now() + ttl).isoformat(),
            "host": socket.gethostname(),  # with the pid: a holder that died on this host is known at once
            "pid": os.getpid(),
            "pid_namespace": _pid_namespace(),  # a container on the host's network has the host's name
        }
    )
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(_Held),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(wait_s),
            reraise=True,
        ):
            with attempt:
                _take(uri, lease.encode())
    except _Held as busy:
        raise LockTimeout(f"{uri} is held by {busy}: waited {wait_s:g} s") from None
    try:
        yield
    finally:
        _release(uri, token)


def abandoned(uri: str) -> str | None:
    """Why nobody holds the lease at ``uri`` any more, or None while its holder may still be at work.

    It is abandoned when it was released (no object), expired, or taken by a process of this host that is gone.

    Raises:
        StorageError: The store cannot say (unreachable).
    """
    if not storage.exists(uri):  # a store that cannot answer raises: nothing is judged abandoned then
        return "its lease was released"
    try:
        current = json.loads(storage.read_bytes(uri))
    except storage.StorageError:
        if not storage.exists(uri):
            return "its lease was released"
        raise
    if datetime.fromisoformat(current["expires_at"]) <= _now():
        return f"the lease of {current['owner']} expired at {current['expires_at']}"
    if _died_here(current):
        return f"{current['owner']} is no longer running"
    return None


def _died_here(lease: dict[str, object]) -> bool:
    """Whether the lease's holder was a process of this host (and pid namespace) that no longer exists."""
    if (
        lease.get("host") != socket.gethostname()
        or lease.get("pid_namespace", _pid_namespace()) != _pid_namespace()
    ):
        return False
    return not _alive(int(str(lease.get("pid", 0))))


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the host name alone
        return ""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _take(uri: str, lease: bytes) -> None:
    if storage.create_bytes(uri, lease):
        return
    try:
        data, version = storage.read_versioned(uri)
    except storage.StorageError:
        raise _Held("a holder releasing it") from None  # released between the two calls: try again
    current = json.loads(data)
    if datetime.fromisoformat(current["expires_at"]) > _now() and not _died_here(current):
        raise _Held(f"{current['owner']} until {current['expires_at']}")
    # Its holder died without releasing it (expired, or gone from this host): take it over, unless someone
    # else just did.
    try:
        storage.replace_bytes(uri, lease, version)
    except storage.ConflictError:
        raise _Held("another waiter that took it over first") from None


def _release(uri: str, token: str) -> None:
    try:
        current = json.loads(storage.read_bytes(uri))
    except storage.StorageError:
        return
    if current.get("token") == token:  # not a lease that expired and was taken over meanwhile
        storage.delete(uri)


def _now() -> datetime:
    return datetime.now(UTC)
