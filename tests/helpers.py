"""Helpers the integration and fault tiers share: waiting on a condition, free ports, a real MLflow server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], *, timeout: float, what: str | Callable[[], str], interval: float = 0.5
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail naming ``what`` (or what it
    returns then) past the deadline. The wait ends as soon as the condition holds: only the deadline, never a
    fixed sleep, bounds it."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what if isinstance(what, str) else what()}: not within {timeout:g} s")
        time.sleep(interval)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class MlflowServer:
    """A real ``mlflow server`` on SQLite in ``folder``, artifacts served by it (in ``artifacts``, by default
    ``folder/artifacts``), that a test may kill (SIGKILL, as a crash) and start again on the same port and
    store."""

    def __init__(self, folder: Path, workers: int = 1, artifacts: Path | None = None) -> None:
        self.folder = folder
        self.artifacts = artifacts or folder / "artifacts"
        self.workers = workers
        [self.port] = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> None:
        """Start it (if it is not running) and wait until it answers its health check."""
        import httpx

        if self.running:
            return
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        with self.log.open("ab") as log:
            # Its own process group: a kill takes the workers with it, as a crash of the machine would.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True
            )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=timeout, what=f"the mlflow server's health; {self.log}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server and its workers; returns once they are gone."""
        if self.process is None:
            return
        try:
            import os

            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop it gracefully (the end of a test module)."""
        if self.running:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
