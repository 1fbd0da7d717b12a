"""Leases on a project's objects: one holder at a time across processes, a dead holder's lease expires."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from retrainer import locks, storage


@pytest.fixture(params=["local", "s3"])
def lease(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    root = str(tmp_path) if request.param == "local" else request.getfixturevalue("s3_bucket") + "/leases"
    return storage.join(root, "locks", "champion.json")


def test_one_holder_at_a_time_the_next_waits_for_the_release(lease: str) -> None:
    events: list[str] = []
    first_holds = threading.Event()

    def first() -> None:
        with locks.held(lease, "first"):
            first_holds.set()
            time.sleep(0.5)  # holds it for a while, so the second one must wait
            events.append("first releases")

    def second() -> None:
        first_holds.wait(10)
        with locks.held(lease, "second", wait_s=30):
            events.append("second holds")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert events == ["first releases", "second holds"]
    assert not storage.exists(lease)  # released


def test_a_waiter_gives_up_naming_the_holder(lease: str) -> None:
    holder = "promote of run abc on worker-1"
    with (
        locks.held(lease, holder),
        pytest.raises(locks.LockTimeout, match=rf"held by {holder} until .*waited 0.5 s"),
        locks.held(lease, "rollback", wait_s=0.5),
    ):
        pass
    with locks.held(lease, "rollback", wait_s=0.5):  # free again
        pass


def test_a_dead_holders_lease_expires_and_is_taken_over(lease: str) -> None:
    with locks.held(lease, "died", ttl=timedelta(seconds=-1)):  # as if its holder had died long ago
        with locks.held(lease, "next", wait_s=5):
            assert json.loads(storage.read_bytes(lease))["owner"] == "next"
        # Releasing the expired lease later must not delete the lease someone else holds now.
        storage.write_bytes(
            lease, json.dumps({"owner": "third", "token": "t", "expires_at": "2999-01-01"}).encode()
        )
    assert json.loads(storage.read_bytes(lease))["owner"] == "third"


def test_a_lease_is_abandoned_once_released_expired_or_its_process_is_gone(lease: str) -> None:
    import os
    import socket
    import subprocess
    import sys

    with locks.held(lease, "trainer"):
        assert locks.abandoned(lease) is None  # held by this live process
    assert locks.abandoned(lease) == "its lease was released"
    with locks.held(lease, "short", ttl=timedelta(seconds=-1)):
        assert locks.abandoned(lease).startswith("the lease of short expired at ")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {
        "owner": "killed trainer",
        "token": "t",
        "taken_at": "2026-01-01T00:00:00+00:00",
        "expires_at": "2999-01-01T00:00:00+00:00",
        "host": socket.gethostname(),
        "pid": int(gone.stdout),
    }
    storage.write_bytes(lease, json.dumps(dead).encode())
    assert locks.abandoned(lease) == "killed trainer is no longer running"
    storage.write_bytes(lease, json.dumps({**dead, "host": "another-host"}).encode())
    assert locks.abandoned(lease) is None  # another machine's process: only its expiry can tell
    assert os.getpid() != int(gone.stdout)


def test_a_lease_whose_holder_died_on_this_host_is_taken_over_at_once(lease: str) -> None:
    """A killed holder's lease need not be waited out to its expiry where its death can be seen."""
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {
        "owner": "killed launcher",
        "token": "t",
        "expires_at": "2999-01-01T00:00:00+00:00",
        "host": socket.gethostname(),
        "pid": int(gone.stdout),
    }
    storage.write_bytes(lease, json.dumps(dead).encode())
    with locks.held(lease, "retry", wait_s=0):
        assert json.loads(storage.read_bytes(lease))["owner"] == "retry"
    # Another pid namespace (a container on the host's network has the host's name): its pids are not ours.
    storage.write_bytes(lease, json.dumps({**dead, "pid_namespace": "pid:[1]"}).encode())
    with pytest.raises(locks.LockTimeout, match="killed launcher"), locks.held(lease, "retry", wait_s=0):
        pass
    storage.write_bytes(lease, json.dumps({**dead, "host": "another-host"}).encode())
    with pytest.raises(locks.LockTimeout, match="killed launcher"), locks.held(lease, "retry", wait_s=0):
        pass
