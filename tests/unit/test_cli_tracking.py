"""Which MLflow server the command line uses: MLFLOW_TRACKING_URI (from the environment or ./.env), else the
embedded stack's while it runs, else a clear refusal; never a local store."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from retrainer import stack
from retrainer.cli import app
from tests.helpers import free_ports


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with no .env, no MLflow address in the environment and a stack state folder of its own."""
    saved = dict(os.environ)  # the CLI copies .env into its environment: put back exactly what was there
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_PORT"):
        os.environ.pop(name, None)
    os.environ["RETRAINER_STACK_DIR"] = str(tmp_path / "state")
    monkeypatch.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.environ.clear()
        os.environ.update(saved)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def _history(config: Path) -> object:
    return CliRunner().invoke(app, ["history", "--config", str(config)])


def test_without_any_server_the_cli_refuses_saying_where_it_looked(elsewhere: Path, synth: object) -> None:
    result = _history(Path(synth.flights_config))  # type: ignore[attr-defined]
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "no MLflow server to use: MLFLOW_TRACKING_URI is not set" in text
    assert str(elsewhere / ".env") in text and str(elsewhere / "state") in text and "make up" in text
    assert not list(elsewhere.rglob("mlflow.db")) and not (elsewhere / "mlruns").exists()  # no local store


def test_an_address_in_dot_env_is_used_and_an_unreachable_one_is_named(elsewhere: Path, synth: object) -> None:
    (port,) = free_ports(1)
    (elsewhere / ".env").write_text(f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}\nPOSTGRES_PASSWORD=\n")
    result = _history(Path(synth.flights_config))  # type: ignore[attr-defined]
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"MLflow at http://127.0.0.1:{port} (from MLFLOW_TRACKING_URI) does not answer" in text
    assert "POSTGRES_PASSWORD" not in os.environ  # an empty value in .env means unset


def test_the_environment_wins_over_dot_env(elsewhere: Path) -> None:
    from retrainer import cli

    (elsewhere / ".env").write_text("MLFLOW_TRACKING_URI=http://from-the-file:5000\n")
    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///from-the-environment.db"
    cli._read_env_file(elsewhere / ".env")
    assert cli._tracking().uri == "sqlite:///from-the-environment.db"


def test_the_running_embedded_stacks_mlflow_is_found_with_its_login(elsewhere: Path, health_server: int) -> None:
    from retrainer import cli

    os.environ["MLFLOW_PORT"] = str(health_server)
    settings = stack.StackSettings.from_env()
    assert stack.embedded_tracking(settings) is None  # nothing runs yet
    # The stack's record of a running MLflow (this process stands in for it; a server answers its port).
    settings.run_dir.mkdir(parents=True)
    me = psutil.Process()
    record = {"pid": me.pid, "create_time": me.create_time()}
    (settings.run_dir / f"{stack.MLFLOW_COMPONENT}.pid").write_text(json.dumps(record))
    tracking = cli._tracking()
    assert tracking.uri == f"http://127.0.0.1:{health_server}"
    assert (tracking.username, tracking.password) == ("admin", stack.mlflow_password(settings))
