"""Unit tests of the embedded stack's settings, environment and process handling (no server is started)."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from retrainer import stack
from retrainer.stack import StackError, StackSettings, airflow_env, stack_status, start_stack, stop_stack


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    dags = tmp_path / "dags"
    dags.mkdir()
    return StackSettings(
        repo_root=stack.REPO_ROOT,
        state_dir=tmp_path / "state",
        airflow_port=_free_port(),
        mlflow_port=_free_port(),
        dags_folder=dags,
        plugins_folder=tmp_path / "plugins",
        worker_log_port=_free_port(),
        trigger_log_port=_free_port(),
    )


def test_from_env_defaults() -> None:
    settings = StackSettings.from_env({})
    assert settings.airflow_port == 8080
    assert settings.mlflow_port == 5000
    assert settings.state_dir == stack.REPO_ROOT / ".stack"
    assert settings.dags_folder == stack.REPO_ROOT / "dags"
    assert settings.plugins_folder == stack.REPO_ROOT / "plugins"
    assert (settings.worker_log_port, settings.trigger_log_port) == (8793, 8794)
    assert settings.admin_password is None


def test_from_env_honours_variables(tmp_path: Path) -> None:
    settings = StackSettings.from_env(
        {
            "AIRFLOW_PORT": "18080",
            "MLFLOW_PORT": "15000",
            "RETRAINER_STACK_DIR": str(tmp_path / "state"),
            "RETRAINER_DAGS_FOLDER": str(tmp_path / "dags"),
            "RETRAINER_PLUGINS_FOLDER": str(tmp_path / "plugins"),
            "AIRFLOW_WORKER_LOG_PORT": "18793",
            "AIRFLOW_TRIGGER_LOG_PORT": "18794",
            "AIRFLOW_ADMIN_PASSWORD": "s3cret",
        }
    )
    assert (settings.airflow_port, settings.mlflow_port) == (18080, 15000)
    assert settings.state_dir == tmp_path / "state"
    assert settings.dags_folder == tmp_path / "dags"
    assert settings.plugins_folder == tmp_path / "plugins"
    assert (settings.worker_log_port, settings.trigger_log_port) == (18793, 18794)
    assert settings.admin_password == "s3cret"
    assert settings.mlflow_url == "http://127.0.0.1:15000"
    assert settings.airflow_api_url == "http://127.0.0.1:18080"


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_PORT", "18081")
    assert StackSettings.from_env().airflow_port == 18081


@pytest.mark.parametrize("value", ["http", "0", "70000"])
def test_from_env_rejects_bad_port(value: str) -> None:
    with pytest.raises(StackError, match="MLFLOW_PORT"):
        StackSettings.from_env({"MLFLOW_PORT": value})


def test_airflow_env_points_components_at_each_other(settings: StackSettings) -> None:
    env = airflow_env(settings, base={"PATH": "/usr/bin"})
    port = settings.airflow_port
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{port}/execution/"
    assert env["AIRFLOW__API__BASE_URL"] == f"http://localhost:{port}"
    assert env["AIRFLOW__API__PORT"] == str(port)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(settings.dags_folder)
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(settings.plugins_folder)
    assert env["AIRFLOW_HOME"] == str(settings.state_dir / "airflow")
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{settings.state_dir / 'airflow' / 'airflow.db'}"
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == str(settings.worker_log_port)
    assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == str(settings.trigger_log_port)
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{settings.mlflow_port}"
    password = stack.mlflow_password(settings)
    assert json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"]) == {
        "conn_type": "http",
        "host": f"http://127.0.0.1:{settings.mlflow_port}",
        "login": "admin",
        "password": password,
    }
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("admin", password)
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_jwt_secret_is_generated_once_and_private(settings: StackSettings) -> None:
    first = airflow_env(settings, base={})["AIRFLOW__API_AUTH__JWT_SECRET"]
    second = airflow_env(settings, base={})["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert first == second
    assert len(bytes.fromhex(first)) == 64
    secret_file = settings.state_dir / "jwt_secret"
    assert secret_file.read_text().strip() == first
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    other = StackSettings(repo_root=settings.repo_root, state_dir=settings.state_dir / "other")
    assert airflow_env(other, base={})["AIRFLOW__API_AUTH__JWT_SECRET"] != first


def test_airflow_env_passes_caller_variables_but_keeps_its_own(settings: StackSettings) -> None:
    base = {
        "RETRAINER_PROJECT": "flights",
        "AIRFLOW__CORE__PARALLELISM": "8",  # a tuning default: the caller wins
        "AIRFLOW_HOME": "/somewhere/else",  # needed by the stack: the stack wins
        "AIRFLOW__CORE__DAGS_FOLDER": "/other/dags",
    }
    env = airflow_env(settings, base=base)
    assert env["RETRAINER_PROJECT"] == "flights"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "8"
    assert env["AIRFLOW_HOME"] == str(settings.airflow_home)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(settings.dags_folder)
    assert airflow_env(settings, base={})["AIRFLOW__CORE__PARALLELISM"] == "4"


def test_mlflow_env_disables_job_workers(settings: StackSettings) -> None:
    assert stack.mlflow_env(settings, base={})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_mlflow_runs_its_basic_auth_app_with_a_generated_private_admin_password(settings: StackSettings) -> None:
    import configparser

    env = stack.mlflow_env(settings, base={})
    assert stack._command(settings, "mlflow")[-2:] == ["--app-name", "basic-auth"]
    config = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    parsed = configparser.ConfigParser()
    parsed.read(config)
    password = stack.mlflow_password(settings)
    assert len(password) >= 16 and password == stack.mlflow_password(settings)  # generated once
    assert dict(parsed["mlflow"]) | {"database_uri": "-"} == {
        "default_permission": "READ",
        "database_uri": "-",
        "admin_username": "admin",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": "60",
    }
    assert parsed["mlflow"]["database_uri"].startswith(f"sqlite:///{settings.mlflow_dir}")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == password  # from the environment, not in the file
    for secret in (config, settings.mlflow_dir / "admin_password", settings.mlflow_dir / "flask_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == (settings.mlflow_dir / "flask_secret").read_text().strip()


def test_the_log_servers_listen_on_the_stacks_host(settings: StackSettings) -> None:
    # Airflow's own log servers would listen on every interface: the stack runs that app on its host instead.
    for name in ("scheduler", "triggerer"):
        assert stack._command(settings, name)[-1] == "--skip-serve-logs"
    assert stack._command(settings, "task-logs")[-2:] == ["127.0.0.1", str(settings.worker_log_port)]
    assert stack._command(settings, "trigger-logs")[-2:] == ["127.0.0.1", str(settings.trigger_log_port)]
    assert (
        stack.airflow_env(settings, base={})["AIRFLOW__CORE__HOSTNAME_CALLABLE"]
        == "retrainer.stack.stack_hostname"
    )


def test_admin_password_from_settings_is_written_for_airflow(settings: StackSettings) -> None:
    assert stack.admin_password(settings) is None
    generated = stack._ensure_admin_password(settings)
    assert stack.admin_password(settings) == generated
    assert stack._ensure_admin_password(settings) == generated  # kept across starts
    chosen = StackSettings(**{**settings.__dict__, "admin_password": "chosen"})
    stack._ensure_admin_password(chosen)
    assert json.loads(settings.passwords_file.read_text()) == {"admin": "chosen"}


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("airflow_port", "AIRFLOW_PORT"),
        ("mlflow_port", "MLFLOW_PORT"),
        ("worker_log_port", "AIRFLOW_WORKER_LOG_PORT"),
    ],
)
def test_start_stack_refuses_a_busy_port(settings: StackSettings, field: str, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = StackSettings(**{**settings.__dict__, field: port})
        with pytest.raises(StackError, match=rf"port {port} .*already in use.*{variable}"):
            start_stack(taken, timeout=5)
    assert not list(taken.run_dir.glob("*.pid"))


def test_start_stack_needs_the_dags_folder(settings: StackSettings, tmp_path: Path) -> None:
    missing = StackSettings(**{**settings.__dict__, "dags_folder": tmp_path / "nope"})
    with pytest.raises(StackError, match="DAGs folder"):
        start_stack(missing, timeout=5)


def test_stop_stack_when_nothing_runs(settings: StackSettings) -> None:
    assert stop_stack(settings) == []
    settings.run_dir.mkdir(parents=True)
    stale = settings.run_dir / "scheduler.pid"
    stale.write_text(json.dumps({"pid": 2**22 - 1, "create_time": 0.0, "command": ["airflow"]}))
    assert stop_stack(settings) == []
    assert not stale.exists()


def test_stop_stack_kills_the_process_group(settings: StackSettings) -> None:
    # A parent that ignores SIGTERM and a child in its group: both must go (the parent by SIGKILL).
    script = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    popen = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        parent = psutil.Process(popen.pid)
        for _ in range(300):  # interpreter start-up can take seconds on a loaded 2-core machine
            if parent.children():
                break
            psutil.wait_procs([], timeout=0.1)
        [child] = parent.children()
        settings.run_dir.mkdir(parents=True)
        record = {"pid": popen.pid, "create_time": parent.create_time(), "command": ["python"]}
        (settings.run_dir / "triggerer.pid").write_text(json.dumps(record))
        assert stop_stack(settings, grace=1.0) == ["triggerer"]
        popen.wait(timeout=5)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert not (settings.run_dir / "triggerer.pid").exists()
    finally:
        if popen.poll() is None:
            popen.kill()


def test_start_stack_refuses_other_settings_while_running(settings: StackSettings) -> None:
    # Pretend this test process is the running MLflow server, started on another port.
    me = psutil.Process()
    settings.run_dir.mkdir(parents=True)
    record = {"pid": me.pid, "create_time": me.create_time(), "command": [], "settings": {"MLFLOW_PORT": "1"}}
    (settings.run_dir / "mlflow.pid").write_text(json.dumps(record))
    expected = rf"running with other settings \(MLFLOW_PORT 1 -> {settings.mlflow_port}\)"
    with pytest.raises(StackError, match=expected):
        start_stack(settings, timeout=5)
    assert stack_status(settings).running == ["mlflow"]


def test_stack_status_when_nothing_runs(settings: StackSettings) -> None:
    status = stack_status(settings)
    assert not status.healthy
    assert status.running == []
    assert status.airflow_health is None
    assert not status.mlflow_healthy
    assert status.username == "admin"
    assert status.airflow_url == f"http://localhost:{settings.airflow_port}"
