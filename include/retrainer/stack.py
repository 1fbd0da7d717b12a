"""The embedded default stack: a local Airflow 3 and an MLflow tracking server, run as subprocesses.

Airflow runs as its four components (``api-server``, ``scheduler``, ``dag-processor``, ``triggerer``) on SQLite
with the ``LocalExecutor``; MLflow runs ``mlflow server`` on SQLite with local artifacts. Each server is started
in its own session (process group) from the venv's ``airflow`` / ``mlflow`` scripts, so that stopping it also
stops the workers it forked. Nothing here imports Airflow or MLflow.

Everything the stack writes lives under one state folder (``RETRAINER_STACK_DIR``, default ``<repo>/.stack``)::

    .stack/
      airflow/                  AIRFLOW_HOME: airflow.cfg, airflow.db, task logs, the admin passwords file
      mlflow/mlflow.db          MLflow backend store
      mlflow/artifacts/         MLflow artifact store (served by the tracking server)
      logs/<component>.log      stdout and stderr of every process started
      run/<component>.pid       JSON: pid, process start time, command, the settings it was started with
      jwt_secret                64 random bytes (hex) shared by all Airflow components

Run ``python -m retrainer.stack up|down|status`` or use :data:`cli` from another Typer app.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import typer

if TYPE_CHECKING:
    from retrainer.tracking import Tracking

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository this package is installed from (editable install: ``include/retrainer`` lives in it)."""

ADMIN_USERNAME = "admin"
# The tasks' own Airflow user (role "user": it may edit DAG runs, e.g. set a run's note), in the airflow_api
# connection; its password is generated once beside the admin's.
SERVICE_USERNAME = "retrainer"
HEALTHY = "healthy"
# Airflow's own log servers (started by the scheduler and the triggerer) listen on every interface; the stack
# starts them with --skip-serve-logs and runs the same app on its host instead.
LOG_SERVERS = ("task-logs", "trigger-logs")
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", *LOG_SERVERS)
MLFLOW_COMPONENT = "mlflow"
COMPONENTS = (*AIRFLOW_COMPONENTS, MLFLOW_COMPONENT)
_STOP_ORDER = ("scheduler", "triggerer", "dag-processor", "api-server", *LOG_SERVERS, MLFLOW_COMPONENT)
_LOG_SERVER_CODE = """
import sys, uvicorn
from airflow.utils.serve_logs.log_server import get_app
uvicorn.run(get_app(), host=sys.argv[1], port=int(sys.argv[2]), log_config=None, access_log=False)
"""
_AIRFLOW_HEALTH_KEYS = ("metadatabase", "scheduler", "dag_processor", "triggerer")


class StackError(RuntimeError):
    """The stack cannot be started, is unhealthy, or a setting is invalid."""


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not an integer port number") from None
    if not 0 < value < 65536:
        raise StackError(f"{name}={value} is not a valid port (1-65535)")
    return value


def _env_path(environ: Mapping[str, str], name: str, default: Path) -> Path:
    raw = environ.get(name, "").strip()
    return Path(raw).expanduser().resolve() if raw else default


@dataclass(frozen=True)
class StackSettings:
    """Where the embedded stack lives and which ports it uses.

    Attributes:
        repo_root: The repository root.
        state_dir: Folder holding everything the stack writes (``RETRAINER_STACK_DIR``).
        airflow_port: Port of the Airflow API server and UI (``AIRFLOW_PORT``).
        mlflow_port: Port of the MLflow tracking server (``MLFLOW_PORT``).
        dags_folder: Folder Airflow parses DAGs from (``RETRAINER_DAGS_FOLDER``).
        plugins_folder: Airflow plugins folder (``RETRAINER_PLUGINS_FOLDER``).
        worker_log_port: Port of the log server of running tasks' logs (``AIRFLOW_WORKER_LOG_PORT``).
        trigger_log_port: Port of the log server of triggers' logs (``AIRFLOW_TRIGGER_LOG_PORT``).
        admin_password: Password to set for the Airflow ``admin`` user (``AIRFLOW_ADMIN_PASSWORD``); None keeps
            the one in the passwords file, or generates a random one the first time.
        host: Interface every server of the stack binds to (loopback unless you change it).
    """

    repo_root: Path
    state_dir: Path
    airflow_port: int = 8080
    mlflow_port: int = 5000
    dags_folder: Path = field(default=REPO_ROOT / "dags")
    plugins_folder: Path = field(default=REPO_ROOT / "plugins")
    worker_log_port: int = 8793
    trigger_log_port: int = 8794
    admin_password: str | None = None
    host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        """Read the settings from environment variables, with defaults for the ones that are unset.

        Args:
            environ: The environment to read; ``os.environ`` when None.

        Returns:
            The settings.

        Raises:
            StackError: A port variable is not a valid port number.
        """
        env = os.environ if environ is None else environ
        return cls(
            repo_root=REPO_ROOT,
            state_dir=_env_path(env, "RETRAINER_STACK_DIR", REPO_ROOT / ".stack"),
            airflow_port=_env_int(env, "AIRFLOW_PORT", 8080),
            mlflow_port=_env_int(env, "MLFLOW_PORT", 5000),
            dags_folder=_env_path(env, "RETRAINER_DAGS_FOLDER", REPO_ROOT / "dags"),
            plugins_folder=_env_path(env, "RETRAINER_PLUGINS_FOLDER", REPO_ROOT / "plugins"),
            worker_log_port=_env_int(env, "AIRFLOW_WORKER_LOG_PORT", 8793),
            trigger_log_port=_env_int(env, "AIRFLOW_TRIGGER_LOG_PORT", 8794),
            admin_password=env.get("AIRFLOW_ADMIN_PASSWORD") or None,
        )

    @property
    def airflow_home(self) -> Path:
        """``AIRFLOW_HOME`` of the stack."""
        return self.state_dir / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        """Folder of MLflow's database and artifacts."""
        return self.state_dir / "mlflow"

    @property
    def log_dir(self) -> Path:
        """Folder of the processes' stdout/stderr logs."""
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        """Folder of the pid files."""
        return self.state_dir / "run"

    @property
    def passwords_file(self) -> Path:
        """The simple auth manager's passwords file (JSON ``{"user": "password"}``)."""
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    @property
    def airflow_api_url(self) -> str:
        """URL clients in this machine use for the Airflow REST API."""
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def airflow_ui_url(self) -> str:
        """URL to open in a browser; also Airflow's ``[api] base_url``."""
        host = "localhost" if self.host in {"127.0.0.1", "0.0.0.0"} else self.host
        return f"http://{host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking URI."""
        return f"http://{self.host}:{self.mlflow_port}"

    def ports(self) -> dict[str, int]:
        """The port each component listens on (the dag-processor listens on none)."""
        return {
            "api-server": self.airflow_port,
            "task-logs": self.worker_log_port,
            "trigger-logs": self.trigger_log_port,
            MLFLOW_COMPONENT: self.mlflow_port,
        }


@dataclass(frozen=True)
class ComponentStatus:
    """One process of the stack.

    Attributes:
        name: Component name (``api-server``, ``scheduler``, ``dag-processor``, ``triggerer``, ``task-logs``,
            ``trigger-logs``, ``mlflow``).
        pid: Process id from its pid file, None when there is no pid file.
        alive: Whether that process is still running (the same process, not a recycled pid).
        log_file: Its stdout/stderr log.
    """

    name: str
    pid: int | None
    alive: bool
    log_file: Path


@dataclass(frozen=True)
class StackStatus:
    """What runs, where, and whether it is healthy.

    Attributes:
        airflow_url: Airflow UI URL (open in a browser).
        airflow_api_url: Base URL for REST clients (``AirflowClient``).
        mlflow_url: MLflow UI and tracking URI.
        components: One entry per component.
        airflow_health: Body of ``GET /api/v2/monitor/health``, None when it did not answer.
        mlflow_healthy: Whether MLflow's ``GET /health`` answered OK.
        username: Airflow admin user.
        password: Airflow admin password, None when the passwords file does not exist yet.
        state_dir: The state folder.
        mlflow_username: MLflow's admin user (its basic-auth app).
        mlflow_password: Its password, None before the stack first started.
    """

    airflow_url: str
    airflow_api_url: str
    mlflow_url: str
    components: tuple[ComponentStatus, ...]
    airflow_health: dict[str, Any] | None
    mlflow_healthy: bool
    username: str
    password: str | None
    state_dir: Path
    mlflow_username: str = ADMIN_USERNAME
    mlflow_password: str | None = field(default=None, repr=False)

    @property
    def airflow_healthy(self) -> bool:
        """Whether the metadatabase, scheduler, dag-processor and triggerer all report healthy."""
        return _airflow_health_ok(self.airflow_health)

    @property
    def healthy(self) -> bool:
        """Whether every component is alive and both servers report healthy."""
        return self.airflow_healthy and self.mlflow_healthy and all(c.alive for c in self.components)

    @property
    def running(self) -> list[str]:
        """Names of the components whose process is alive."""
        return [c.name for c in self.components if c.alive]


# --------------------------------------------------------------------------------------------------------------
# Environment


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def stack_hostname() -> str:
    """Airflow's ``hostname_callable`` in the stack: the interface its log servers listen on."""
    host = os.environ.get("RETRAINER_STACK_HOST", "127.0.0.1")
    return socket.getfqdn() if host in {"0.0.0.0", "::", ""} else host


def _executable(name: str) -> str:
    path = _venv_bin() / name
    if not path.exists():
        raise StackError(f"{path} not found: install the project's requirements into this venv ({sys.prefix})")
    return str(path)


def jwt_secret(settings: StackSettings) -> str:
    """The JWT secret of the stack's Airflow components, generated once and kept in the state folder.

    Args:
        settings: Stack settings.

    Returns:
        128 hex characters (64 random bytes).
    """
    return _state_secret(settings.state_dir / "jwt_secret", lambda: secrets.token_hex(64))


def _state_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in ``path`` (mode 0600), made by ``make`` the first time."""
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(secret + "\n")
    return secret


def mlflow_password(settings: StackSettings) -> str:
    """The password of MLflow's ``admin`` user (MLflow's basic-auth app), generated once and kept in the state
    folder; MLflow stores it in its user database when it first starts."""
    return _state_secret(settings.mlflow_dir / "admin_password", lambda: secrets.token_urlsafe(12))


def mlflow_auth_config(settings: StackSettings) -> Path:
    """Write the basic-auth app's configuration (``MLFLOW_AUTH_CONFIG_PATH``): its user database in the state
    folder and the ``admin`` user (its password comes from the environment, see :func:`mlflow_env`); a request
    without credentials is refused."""
    path = settings.mlflow_dir / "basic_auth.ini"
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{settings.mlflow_dir / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Checked once a minute per user, not with PBKDF2 on every one of a cycle's many requests.
        "auth_cache_ttl_seconds = 60\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    return path


def admin_password(settings: StackSettings, user: str = ADMIN_USERNAME) -> str | None:
    """A user's password in the simple auth manager's passwords file (the admin's by default).

    Args:
        settings: Stack settings.
        user: The user.

    Returns:
        The password, or None when the file or the user entry does not exist yet.
    """
    try:
        passwords = json.loads(settings.passwords_file.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    value = passwords.get(user)
    return value if isinstance(value, str) else None


def service_password(settings: StackSettings) -> str:
    """The password of the tasks' own user (:data:`SERVICE_USERNAME`), generated once."""
    return _ensure_password(settings, SERVICE_USERNAME, None)


def _ensure_password(settings: StackSettings, user: str, wanted: str | None) -> str:
    """Write a user's password into the passwords file before Airflow starts (Airflow keeps existing entries)."""
    current = admin_password(settings, user)
    wanted = wanted or current or secrets.token_urlsafe(12)
    if wanted != current:
        settings.airflow_home.mkdir(parents=True, exist_ok=True)
        try:
            passwords = json.loads(settings.passwords_file.read_text() or "{}")
        except (FileNotFoundError, json.JSONDecodeError):
            passwords = {}
        passwords[user] = wanted
        fd = os.open(settings.passwords_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(json.dumps(passwords) + "\n")
    return wanted


def _ensure_admin_password(settings: StackSettings) -> str:
    """Write the admin password into the passwords file before Airflow starts."""
    return _ensure_password(settings, ADMIN_USERNAME, settings.admin_password)


# Airflow settings the stack needs; the caller's environment cannot override them.
def _forced_airflow_settings(settings: StackSettings) -> dict[str, str]:
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.plugins_folder),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USERNAME}:admin,{SERVICE_USERNAME}:user",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.passwords_file),
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret(settings),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_api_url}/execution/",
        "AIRFLOW__API__BASE_URL": settings.airflow_ui_url,
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.trigger_log_port),
        # The API server fetches a running task's log from the host the task recorded: the stack's log servers.
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "retrainer.stack.stack_hostname",
        "RETRAINER_STACK_HOST": settings.host,
        "MLFLOW_TRACKING_URI": settings.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": ADMIN_USERNAME,
        "MLFLOW_TRACKING_PASSWORD": mlflow_password(settings),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
            {
                "conn_type": "http",
                "host": settings.mlflow_url,
                "login": ADMIN_USERNAME,
                "password": mlflow_password(settings),
            }
        ),
        # Airflow's REST API, for what tasks cannot do through the execution API (a run's note).
        "AIRFLOW_CONN_AIRFLOW_API": json.dumps(
            {
                "conn_type": "http",
                "host": settings.airflow_api_url,
                "login": SERVICE_USERNAME,
                "password": service_password(settings),
            }
        ),
    }


# What the steps import when they run (Airflow's task runner first).
TASK_PRELOAD = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",  # every task parses its DAG file with it (0.4 s to import)
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "sklearn.ensemble",
    "mlflow",
    "great_expectations",
    "evidently",
    "retrainer.preload",
)

# Defaults for a small, fast-reacting demo; AIRFLOW__* variables of the caller's environment win.
_DEFAULT_AIRFLOW_SETTINGS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    # The scheduler looks again this soon after a loop with nothing to do (Airflow's default: 1 s), so a step
    # starts about 0.2 s after the one before it ends instead of 0.6 s (bench/bench_cycle.py).
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
    # A task's supervisor that reads the last of its task's output a moment before the task process has exited
    # waits this long before it looks again (its selector is empty by then): 5 s by default, which a cycle paid
    # once or twice. It is also how often a running task heartbeats.
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    # The scheduler's LocalExecutor forks its workers, and they every task, from a forkserver that imported the
    # steps' libraries once: a task starts in about a second instead of re-importing pandas, scikit-learn,
    # MLflow, Great Expectations and Evidently (several seconds each time, most of a demo cycle). A forkserver
    # forks while single-threaded, unlike the scheduler itself.
    "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
    "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": ",".join(TASK_PRELOAD),
}


def airflow_env(settings: StackSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The complete environment of the stack's Airflow processes.

    It is the caller's environment (so ``RETRAINER_*``, ``AIRFLOW_VAR_*``, ``AIRFLOW_CONN_*`` and cloud
    credentials pass through) plus demo defaults that the caller's ``AIRFLOW__*`` variables may override, plus
    the settings the stack needs (home, database, folders, ports, JWT secret, execution API URL, MLflow URI and
    the ``mlflow_default`` connection), which always win. Creates the JWT secret on first use.

    Args:
        settings: Stack settings.
        base: Environment to start from; ``os.environ`` when None.

    Returns:
        The environment, for ``subprocess`` calls of the ``airflow`` CLI.
    """
    env = dict(os.environ if base is None else base)
    for key, value in _DEFAULT_AIRFLOW_SETTINGS.items():
        env.setdefault(key, value)
    env.update(_forced_airflow_settings(settings))
    env["PATH"] = os.pathsep.join([str(_venv_bin()), env.get("PATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    # Tasks load models only through retrainer.trusted_models; MLflow's own loaders stay closed to pickles.
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    return env


def mlflow_env(settings: StackSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the MLflow tracking server (the caller's, without the server's job workers).

    Args:
        settings: Stack settings.
        base: Environment to start from; ``os.environ`` when None.

    Returns:
        The environment.
    """
    env = dict(os.environ if base is None else base)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # MLflow's basic-auth app: every request but the health check needs the admin's (or a user's) login.
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(mlflow_auth_config(settings))
    env["MLFLOW_AUTH_ADMIN_PASSWORD"] = mlflow_password(settings)  # stored in its user database on first start
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = _state_secret(
        settings.mlflow_dir / "flask_secret", lambda: secrets.token_hex(32)
    )
    env["PATH"] = os.pathsep.join([str(_venv_bin()), env.get("PATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    # Tasks load models only through retrainer.trusted_models; MLflow's own loaders stay closed to pickles.
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    return env


def _command(settings: StackSettings, name: str) -> list[str]:
    if name == "api-server":
        port = str(settings.airflow_port)
        return [_executable("airflow"), "api-server", "--host", settings.host, "--port", port]
    if name in ("scheduler", "triggerer"):
        return [_executable("airflow"), name, "--skip-serve-logs"]
    if name in LOG_SERVERS:
        port = settings.worker_log_port if name == "task-logs" else settings.trigger_log_port
        return [sys.executable, "-c", _LOG_SERVER_CODE, settings.host, str(port)]
    if name in AIRFLOW_COMPONENTS:
        return [_executable("airflow"), name]
    if name == MLFLOW_COMPONENT:
        mlflow_dir = settings.mlflow_dir
        return [
            _executable("mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            "--artifacts-destination",
            str(mlflow_dir / "artifacts"),
            "--host",
            settings.host,
            "--port",
            str(settings.mlflow_port),
            "--workers",
            "1",
            "--app-name",
            "basic-auth",
        ]
    raise StackError(f"unknown component {name!r}")


# --------------------------------------------------------------------------------------------------------------
# Processes


def _pid_file(settings: StackSettings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def _log_file(settings: StackSettings, name: str) -> Path:
    return settings.log_dir / f"{name}.log"


def _read_pid_file(settings: StackSettings, name: str) -> dict[str, Any] | None:
    try:
        record = json.loads(_pid_file(settings, name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _process(record: dict[str, Any] | None) -> psutil.Process | None:
    """The live process a pid file describes, None when it has exited or the pid was reused."""
    if record is None:
        return None
    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - float(record.get("create_time", 0))) > 1.0:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.Error, ValueError, TypeError):
        return None
    return process


def _running(settings: StackSettings, name: str) -> psutil.Process | None:
    return _process(_read_pid_file(settings, name))


def port_in_use(port: int) -> bool:
    """Whether something listens on (or holds) ``port`` on any interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _check_ports(settings: StackSettings, names: list[str]) -> None:
    ports = settings.ports()
    wanted = [(name, ports[name]) for name in names if name in ports]
    seen: dict[int, str] = {}
    for name, port in wanted:
        if port in seen:
            raise StackError(f"{seen[port]} and {name} are both configured to use port {port}")
        seen[port] = name
    variables = {
        "api-server": "AIRFLOW_PORT",
        "task-logs": "AIRFLOW_WORKER_LOG_PORT",
        "trigger-logs": "AIRFLOW_TRIGGER_LOG_PORT",
        MLFLOW_COMPONENT: "MLFLOW_PORT",
    }
    busy = [(name, port) for name, port in wanted if port_in_use(port)]
    if busy:
        details = "; ".join(
            f"port {port} ({name}) is already in use by another process: stop it or set {variables[name]}"
            for name, port in busy
        )
        raise StackError(f"cannot start the stack: {details}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(content[-lines:])


def _fingerprint(settings: StackSettings, name: str) -> dict[str, str]:
    """The settings a running component was started with, to detect a changed configuration."""
    if name == MLFLOW_COMPONENT:
        return {"MLFLOW_PORT": str(settings.mlflow_port), "MLFLOW_AUTH": "basic-auth"}
    return {
        "AIRFLOW_PORT": str(settings.airflow_port),
        "MLFLOW_PORT": str(settings.mlflow_port),
        "AIRFLOW_WORKER_LOG_PORT": str(settings.worker_log_port),
        "AIRFLOW_TRIGGER_LOG_PORT": str(settings.trigger_log_port),
        "MLFLOW_AUTH": "basic-auth",
        "RETRAINER_DAGS_FOLDER": str(settings.dags_folder),
        "RETRAINER_PLUGINS_FOLDER": str(settings.plugins_folder),
    }


def _check_unchanged(settings: StackSettings, names: list[str]) -> None:
    changes = set()
    for name in names:
        started_with = (_read_pid_file(settings, name) or {}).get("settings") or {}
        for key, value in _fingerprint(settings, name).items():
            if key in started_with and started_with[key] != value:
                changes.add(f"{key} {started_with[key]} -> {value}")
    if changes:
        raise StackError(
            f"the stack in {settings.state_dir} is running with other settings ({', '.join(sorted(changes))}): "
            "stop it first (stop_stack / `down`) or use the settings it was started with"
        )


def _spawn(settings: StackSettings, name: str, env: dict[str, str]) -> psutil.Process:
    command = _command(settings, name)
    log_path = _log_file(settings, name)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            command,
            cwd=settings.state_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = psutil.Process(popen.pid)
    record = {
        "pid": popen.pid,
        "create_time": process.create_time(),
        "command": command,
        "settings": _fingerprint(settings, name),
    }
    _pid_file(settings, name).write_text(json.dumps(record) + "\n")
    return process


def _migrate_airflow_db(settings: StackSettings, env: dict[str, str], timeout: float) -> None:
    log_path = _log_file(settings, "db-migrate")
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} airflow db migrate\n".encode())
        log.flush()
        try:
            result = subprocess.run(
                [_executable("airflow"), "db", "migrate"],
                cwd=settings.state_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"`airflow db migrate` took more than {timeout:.0f} s; see {log_path}") from None
    if result.returncode != 0:
        raise StackError(
            f"`airflow db migrate` failed (exit {result.returncode}); end of {log_path}:\n{_tail(log_path)}"
        )


def _terminate(processes: dict[str, psutil.Process], timeout: float = 20.0) -> None:
    """TERM each process's group and any descendants that left it, wait, then KILL what is left."""
    victims: dict[int, psutil.Process] = {}
    for process in processes.values():
        victims[process.pid] = process
        with contextlib.suppress(psutil.Error):
            victims.update((child.pid, child) for child in process.children(recursive=True))
    for process in processes.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
    for victim in victims.values():
        with contextlib.suppress(psutil.Error):
            victim.terminate()
    _, alive = psutil.wait_procs(list(victims.values()), timeout=timeout)
    for process in processes.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    for victim in alive:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    psutil.wait_procs(alive, timeout=5)


# --------------------------------------------------------------------------------------------------------------
# Health


def _airflow_health_ok(health: dict[str, Any] | None) -> bool:
    if not health:
        return False
    return all((health.get(key) or {}).get("status") == HEALTHY for key in _AIRFLOW_HEALTH_KEYS)


def _airflow_health(settings: StackSettings, client: httpx.Client) -> dict[str, Any] | None:
    try:
        response = client.get(f"{settings.airflow_api_url}/api/v2/monitor/health")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _mlflow_healthy(settings: StackSettings, client: httpx.Client) -> bool:
    try:
        return client.get(f"{settings.mlflow_url}/health").status_code == 200
    except httpx.HTTPError:
        return False


def embedded_tracking(settings: StackSettings) -> Tracking | None:
    """The stack's MLflow server, logged in as its admin, while it runs; None when it does not."""
    from retrainer.tracking import Tracking

    if _running(settings, MLFLOW_COMPONENT) is None:
        return None
    return Tracking(settings.mlflow_url, ADMIN_USERNAME, mlflow_password(settings))


def stack_status(settings: StackSettings) -> StackStatus:
    """Report which processes run, whether the servers are healthy, and how to log in.

    Args:
        settings: Stack settings.

    Returns:
        The status; makes two short HTTP requests and starts nothing.
    """
    components = []
    for name in COMPONENTS:
        record = _read_pid_file(settings, name)
        components.append(
            ComponentStatus(
                name=name,
                pid=record["pid"] if record else None,
                alive=_process(record) is not None,
                log_file=_log_file(settings, name),
            )
        )
    with httpx.Client(timeout=3.0) as client:
        health = _airflow_health(settings, client)
        mlflow_ok = _mlflow_healthy(settings, client)
    return StackStatus(
        airflow_url=settings.airflow_ui_url,
        airflow_api_url=settings.airflow_api_url,
        mlflow_url=settings.mlflow_url,
        components=tuple(components),
        airflow_health=health,
        mlflow_healthy=mlflow_ok,
        username=ADMIN_USERNAME,
        password=admin_password(settings),
        state_dir=settings.state_dir,
        mlflow_password=mlflow_password(settings) if (settings.mlflow_dir / "admin_password").exists() else None,
    )


def _wait_healthy(settings: StackSettings, deadline: float) -> None:
    airflow_ok = mlflow_ok = False
    health: dict[str, Any] | None = None
    with httpx.Client(timeout=3.0) as client:
        while True:
            for name in COMPONENTS:
                if _running(settings, name) is None:
                    log_path = _log_file(settings, name)
                    raise StackError(f"{name} exited during start-up; end of {log_path}:\n{_tail(log_path)}")
            if not airflow_ok:
                health = _airflow_health(settings, client)
                airflow_ok = _airflow_health_ok(health)
            if not mlflow_ok:
                mlflow_ok = _mlflow_healthy(settings, client)
            if airflow_ok and mlflow_ok:
                return
            if time.monotonic() > deadline:
                waiting = []
                if not airflow_ok:
                    waiting.append(f"Airflow (last health: {health})")
                if not mlflow_ok:
                    waiting.append("MLflow (GET /health does not answer 200)")
                raise StackError(
                    f"the stack did not become healthy in time; still waiting for {' and '.join(waiting)}; "
                    f"logs in {settings.log_dir}. On a slow machine wait longer: make run STACK_TIMEOUT=1200, "
                    "or retrainer stack up --timeout 1200"
                )
            time.sleep(1.0)


# --------------------------------------------------------------------------------------------------------------
# Public operations


def start_stack(settings: StackSettings, timeout: float = 180) -> StackStatus:
    """Start whatever part of the stack is not running and wait until everything is healthy.

    Idempotent: components already running (per their pid files) are kept, so a second call returns at once.
    Before starting anything, the ports of the components to start are checked. Airflow's database is
    migrated before Airflow's components start. When start-up fails, the processes this call started are
    stopped again (their logs stay).

    Args:
        settings: Stack settings.
        timeout: Seconds to wait for the database migration and for both servers to report healthy.

    Returns:
        The status of the healthy stack.

    Raises:
        StackError: A port is busy, the DAGs folder is missing, the running part of the stack was started with
            other settings, a process exited, or the stack did not become healthy within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    if not settings.dags_folder.is_dir():
        raise StackError(f"DAGs folder {settings.dags_folder} does not exist (RETRAINER_DAGS_FOLDER)")
    for folder in (settings.airflow_home, settings.mlflow_dir / "artifacts", settings.log_dir, settings.run_dir):
        folder.mkdir(parents=True, exist_ok=True)

    missing = [name for name in COMPONENTS if _running(settings, name) is None]
    _check_unchanged(settings, [name for name in COMPONENTS if name not in missing])
    if not missing:
        status = stack_status(settings)
        if status.healthy:
            _ensure_pools(settings, status)  # a project file may have been added since
            return status
    _check_ports(settings, missing)
    for name in missing:
        _pid_file(settings, name).unlink(missing_ok=True)

    _ensure_admin_password(settings)
    env = airflow_env(settings)
    started: dict[str, psutil.Process] = {}
    try:
        if MLFLOW_COMPONENT in missing:  # slowest to come up: start it first, in parallel with the migration
            started[MLFLOW_COMPONENT] = _spawn(settings, MLFLOW_COMPONENT, mlflow_env(settings))
        airflow_missing = [name for name in AIRFLOW_COMPONENTS if name in missing]
        if airflow_missing:
            _migrate_airflow_db(settings, env, timeout=max(deadline - time.monotonic(), 1.0))
        for name in airflow_missing:
            started[name] = _spawn(settings, name, env)
        _wait_healthy(settings, deadline)
        status = stack_status(settings)
        _ensure_pools(settings, status)
    except BaseException:
        _terminate(started)
        for name in started:
            _pid_file(settings, name).unlink(missing_ok=True)
        raise
    return status


def projects_folder(environ: Mapping[str, str] | None = None) -> Path:
    """The folder of project files the DAGs are generated from (``RETRAINER_PROJECTS_DIR``)."""
    return _env_path(os.environ if environ is None else environ, "RETRAINER_PROJECTS_DIR", REPO_ROOT / "projects")


def _ensure_pools(settings: StackSettings, status: StackStatus) -> None:
    """Create each project's pool (its data steps run in it; a task in a missing pool is never scheduled)."""
    from retrainer.airflow_api import AirflowApiError, AirflowClient
    from retrainer.projects import pool_definitions, scan_projects

    pools = pool_definitions(scan_projects(projects_folder()))
    try:
        with AirflowClient(status.airflow_api_url, status.username, status.password or "") as client:
            for name, pool in pools.items():
                client.ensure_pool(name, pool.slots, pool.description)
    except AirflowApiError as error:
        raise StackError(f"cannot create the projects' Airflow pools: {error}") from None


def stop_stack(settings: StackSettings, grace: float = 20.0) -> list[str]:
    """Stop every process the stack started: TERM each process group, wait up to ``grace`` s, KILL what is left.

    Safe to call when nothing runs; stale pid files are removed.

    Args:
        settings: Stack settings.
        grace: Seconds to wait after SIGTERM before SIGKILL (the triggerer needs ~10 s to stop cleanly).

    Returns:
        Names of the components that were running and are now stopped, in stop order.
    """
    processes: dict[str, psutil.Process] = {}
    for name in _STOP_ORDER:
        process = _running(settings, name)
        if process is not None:
            processes[name] = process
    # All at once: the triggerer alone needs ~10 s to let its trigger runner go, the others 1-2 s.
    _terminate(processes, timeout=grace)
    for name in COMPONENTS:
        _pid_file(settings, name).unlink(missing_ok=True)
    return list(processes)


# --------------------------------------------------------------------------------------------------------------
# Command line: python -m retrainer.stack up|down|status

cli = typer.Typer(help="Start, check and stop the embedded Airflow + MLflow stack.", no_args_is_help=True)


def _render(status: StackStatus) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_row("Airflow UI", status.airflow_url)
    table.add_row("MLflow UI", status.mlflow_url)
    table.add_row("Login", f"{status.username} / {status.password or '(not generated yet)'}")
    table.add_row("MLflow login", f"{status.mlflow_username} / {status.mlflow_password or '(not generated yet)'}")
    table.add_row("Airflow", HEALTHY if status.airflow_healthy else f"not healthy: {status.airflow_health}")
    table.add_row("MLflow", HEALTHY if status.mlflow_healthy else "not healthy")
    for component in status.components:
        state = f"pid {component.pid}" if component.alive else "stopped"
        table.add_row(f"  {component.name}", f"{state}  log: {component.log_file}")
    table.add_row("State", str(status.state_dir))
    Console().print(Panel(table, title="retrainer stack", border_style="green" if status.healthy else "red"))


@cli.command("up")
def _up(timeout: float = typer.Option(600, help="Seconds to wait for health.", min=1)) -> None:
    """Start the stack (or what is missing of it) and print the URLs and login."""
    from rich.console import Console

    try:
        with Console(stderr=True).status(
            f"starting the stack and waiting for it to be healthy (up to {timeout:g} s)"
        ):
            status = start_stack(StackSettings.from_env(), timeout=timeout)
    except StackError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from None
    _render(status)


@cli.command("down")
def _down() -> None:
    """Stop everything the stack started."""
    stopped = stop_stack(StackSettings.from_env())
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cli.command("status")
def _status() -> None:
    """Print URLs, processes, health and login; exit 1 when the stack is not healthy."""
    status = stack_status(StackSettings.from_env())
    _render(status)
    if not status.healthy:
        raise typer.Exit(1)


if __name__ == "__main__":
    cli()
