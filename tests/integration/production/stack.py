"""The platform's production configuration, run for real on this one machine as native processes.

Everything is a process this module starts (each in its own session, stdout and stderr in ``<root>/logs``):

- **a private network**: a Linux bridge on a random ``10.x.y.0/24`` whose host side is ``.1``, and one network
  namespace per Celery worker joined to it by a veth pair (``.2``, ``.3``, ...);
- **PostgreSQL** (Debian's binaries, run as the ``postgres`` user): databases ``airflow`` and ``mlflow``, each
  with its own user and password, scram-sha-256 over TCP;
- **Redis**, the Celery broker, with a password and no persistence;
- **SeaweedFS**, the S3 object store, with three identities: ``admin`` (created the buckets), ``platform`` (the
  data bucket only) and ``mlflow`` (the artifact bucket only);
- **the MLflow tracking server** on PostgreSQL, proxying artifacts to S3: clients get no bucket credentials;
- **Airflow's control plane** on the CeleryExecutor: api-server, scheduler, dag-processor and triggerer;
- **Celery workers**, each a separate "machine": its own network namespace (its IP), UTS namespace (hostname =
  its IP, so that ``task_instance.hostname`` is an address the api-server fetches task logs from) and mount
  namespace (the checkout and its code copy read-only, a private ``/tmp``), running its own copy of
  ``dags/``, ``plugins/``, ``include/``, ``great_expectations/`` and the projects, in a working folder outside
  ``/tmp`` and outside the checkout;
- a **StatsD sink** (a UDP socket in this process) that writes every metric Airflow sends into a file.

The control plane binds to the bridge IP only. The one exception, for want of an Airflow setting: the
triggerer's log server listens on all interfaces (on a free port).

Example::

    with production_stack(tmp_path, projects) as stack:
        with stack.airflow_client() as client:
            client.wait_until_dag_parsed("retrain_x")

It needs root, ``ip netns``, PostgreSQL and Redis (``scripts/services.sh install`` is tried once when they are
missing); where it cannot run, :class:`StackUnavailable` says why.
"""

from __future__ import annotations

import compileall
import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import yaml

from retrainer.stack import REPO_ROOT, SERVICE_USERNAME

if TYPE_CHECKING:
    from retrainer.airflow_api import AirflowClient

NAME_PREFIX = "rtp-"
"""Prefix of every bridge, veth and network namespace of a run: ``rtp-<run id>-br`` and so on."""

RECORDS_DIR = Path("/run/retrainer-production")
"""One JSON record per live run (owner, processes, network): what a later run needs to clean up a crashed one.
Under /run, like the namespaces themselves (/run/netns): a reboot removes both."""

RUNS_DIR = Path("/var/tmp")
"""Where each run's service state and worker folders go: outside /tmp (masked in the workers) and readable by
the ``postgres`` user (a pytest tmp_path is not)."""

RUN_DIR_PREFIX = "retrainer-production-"
CODE_FOLDERS = ("dags", "plugins", "include", "great_expectations")
WORKER_LOG_SERVER_PORT = 8793
ADMIN_USERNAME = "admin"
DATA_BUCKET = "retrainer-data"
MLFLOW_BUCKET = "retrainer-mlflow"
S3_REGION = "us-east-1"

_HEALTH_KEYS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
# The caller's variables that would point a process somewhere else than this stack: never inherited.
_ISOLATED_PREFIXES = ("AIRFLOW_", "AIRFLOW__", "MLFLOW_", "AWS_", "RETRAINER_")
# Nothing in the stack talks to the outside world, and a proxy would swallow the requests between its machines.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
# The same settings as the embedded stack (include/retrainer/stack.py), so that both react as fast.
_AIRFLOW_DEFAULTS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
}
# A worker's namespaces: its hostname is its IP; the checkout and its code copy are read-only; /tmp is its own.
_WORKER_WRAPPER = """set -e
hostname "$1"
mount --bind "$2" "$2" && mount -o remount,bind,ro "$2"
mount --bind "$3" "$3" && mount -o remount,bind,ro "$3"
if [ -n "$4" ]; then mount --bind "$4" /tmp; fi
shift 4
exec "$@"
"""
# Run inside a worker's namespaces before the worker starts: what it imports, who it is, what it may write.
_WORKER_PROBE = """import json, os, socket, sys
import retrainer, retrainer_provider
probe = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
probe.close()
print(json.dumps({
    "retrainer": retrainer.__file__,
    "retrainer_provider": retrainer_provider.__file__,
    "hostname": socket.gethostname(),
    "repo_writable": os.access(sys.argv[3], os.W_OK),
    "code_writable": os.access(sys.argv[4], os.W_OK),
    "home_writable": os.access(sys.argv[5], os.W_OK),
}))
"""


class StackUnavailable(RuntimeError):
    """This machine cannot run the production stack: not root, no network namespaces, no PostgreSQL or Redis."""


class ProductionStackError(RuntimeError):
    """The stack failed to start (a process died, a service was not ready in time) or to clean up."""


@dataclass(frozen=True)
class S3Identity:
    """One identity of the object store.

    Attributes:
        name: ``admin``, ``platform`` or ``mlflow``.
        access_key: AWS access key id.
        secret_key: AWS secret access key.
    """

    name: str
    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class Worker:
    """One Celery worker "machine".

    Attributes:
        name: ``worker-1``, ``worker-2``, ...
        celery_hostname: Its Celery node name, ``w1@<ip>``.
        ip: Its address on the bridge; also its hostname, so ``task_instance.hostname``.
        netns: Its network namespace (``ip netns exec NETNS ...``).
        folder: Its working folder (outside /tmp and the checkout).
        code: Its read-only copy of dags/, plugins/, include/, great_expectations/ and projects/.
        home: Its ``AIRFLOW_HOME`` and working directory (task logs in ``home/logs``).
        tmp: Its ``TMPDIR``, also mounted on /tmp inside its namespace.
        log_file: stdout and stderr of ``airflow celery worker``.
        env: Its complete environment.
    """

    name: str
    celery_hostname: str
    ip: str
    netns: str
    folder: Path
    code: Path
    home: Path
    tmp: Path
    log_file: Path
    env: Mapping[str, str] = field(repr=False)

    @property
    def task_log_folder(self) -> Path:
        """Where its task logs are written (gone when the stack stops: copied to ``<root>/logs`` first)."""
        return self.home / "logs"

    @property
    def log_server_url(self) -> str:
        """Its log server, which the api-server reads task logs from."""
        return f"http://{self.ip}:{WORKER_LOG_SERVER_PORT}"


@dataclass(frozen=True)
class ProductionStack:
    """A running production stack: where everything is and how to log in.

    Attributes:
        run_id: Random id of this run (in the names of its bridge, veths and namespaces).
        root: The caller's folder: logs and the control plane's ``AIRFLOW_HOME``.
        run_dir: Service state and worker folders (removed when the stack stops).
        repo: The checkout the control plane runs (and the workers copied).
        projects: The project files the control plane reads (``RETRAINER_PROJECTS_DIR``).
        bridge: Name of the bridge.
        subnet: The bridge's network, e.g. ``10.123.45.0/24``.
        host_ip: The host side of the bridge: every control-plane service listens there.
        airflow_url: Airflow's API server (REST API and UI).
        airflow_username: Airflow admin user.
        airflow_password: Its password.
        mlflow_url: The MLflow tracking server (tracking URI).
        s3_endpoint: The S3 endpoint (``AWS_ENDPOINT_URL``).
        s3_region: The region clients name.
        s3_admin: The identity that created the buckets (all actions).
        s3_platform: The platform's identity (the data bucket only): the one every Airflow process has.
        s3_mlflow: MLflow's identity (the artifact bucket only): only the MLflow server has it.
        data_bucket: The bucket projects keep their data in (``s3://<data_bucket>/<project>``).
        mlflow_bucket: MLflow's artifact bucket.
        airflow_db_dsn: ``postgresql://`` DSN of Airflow's database (its own user).
        mlflow_db_dsn: ``postgresql://`` DSN of MLflow's database (its own user).
        postgres_admin_dsn: libpq DSN of the superuser, over the server's Unix socket (no password).
        redis_url: The Celery broker URL (with its password).
        workers: The Celery workers.
        log_dir: Folder of the process logs.
        logs: Log file of each process and one-shot command, by name.
        pids: Process id of each long-running process, by name (live: a process started again has its new one).
        control_env: Environment of the control plane's processes (to run ``airflow`` commands against it).
        statsd_address: Where Airflow sends StatsD metrics (host, port).
        statsd_log: File holding every StatsD line received, one per line.
        control: The launcher that runs the processes (what :meth:`kill`, :meth:`start_again` and
            :meth:`supervise` act through).
    """

    run_id: str
    root: Path
    run_dir: Path
    repo: Path
    projects: Path
    bridge: str
    subnet: str
    host_ip: str
    airflow_url: str
    airflow_username: str
    airflow_password: str = field(repr=False)
    mlflow_url: str
    s3_endpoint: str
    s3_region: str
    s3_admin: S3Identity
    s3_platform: S3Identity
    s3_mlflow: S3Identity
    data_bucket: str
    mlflow_bucket: str
    airflow_db_dsn: str = field(repr=False)
    mlflow_db_dsn: str = field(repr=False)
    postgres_admin_dsn: str
    redis_url: str = field(repr=False)
    workers: tuple[Worker, ...]
    log_dir: Path
    logs: Mapping[str, Path]
    pids: Mapping[str, int]
    control_env: Mapping[str, str] = field(repr=False)
    statsd_address: tuple[str, int] | None
    statsd_log: Path | None
    control: _Launcher = field(repr=False, compare=False)

    def kill(self, name: str) -> None:
        """SIGKILL a process of the stack (``scheduler``, ``postgres``, ``worker-1``...) and all it started, as a
        crash would; it stays down until :meth:`start_again`."""
        self.control.kill(name)

    def start_again(self, name: str) -> int:
        """Start a killed process again, the way it was started first (the same data); returns its new pid."""
        return self.control.start_again(name)

    def supervise(self) -> None:
        """From now on, start again every process that exits by itself, as ``restart: unless-stopped`` does."""
        self.control.supervise()

    @property
    def restarts(self) -> tuple[str, ...]:
        """The processes the supervisor started again after they exited, with their exit codes, in order."""
        with self.control.lock:
            return tuple(self.control.restarts)

    @property
    def worker_ips(self) -> tuple[str, ...]:
        """The workers' addresses (the hostnames their task instances record)."""
        return tuple(worker.ip for worker in self.workers)

    def s3_env(self, identity: S3Identity | None = None) -> dict[str, str]:
        """AWS variables that point boto3 at the object store as ``identity`` (default: ``platform``)."""
        identity = identity or self.s3_platform
        return {
            "AWS_ACCESS_KEY_ID": identity.access_key,
            "AWS_SECRET_ACCESS_KEY": identity.secret_key,
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_DEFAULT_REGION": self.s3_region,
        }

    def s3_client(self, identity: S3Identity | None = None) -> Any:
        """A boto3 S3 client of the object store as ``identity`` (default: ``platform``)."""
        import boto3

        identity = identity or self.s3_platform
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=self.s3_region,
            aws_access_key_id=identity.access_key,
            aws_secret_access_key=identity.secret_key,
        )

    def airflow_client(self, **kwargs: Any) -> AirflowClient:
        """A REST client logged in as the admin (close it, or use it as a context manager)."""
        from retrainer.airflow_api import AirflowClient

        return AirflowClient(self.airflow_url, self.airflow_username, self.airflow_password, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# The host


def postgres_bindir() -> Path | None:
    """Folder of Debian's PostgreSQL server binaries (``initdb``, ``postgres``), None when not installed."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    # pg_config may belong to a client-only package: Debian keeps each server version in its own folder.
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p.parent.name))
    candidates.extend(reversed(versions))
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _missing_tools() -> list[str]:
    missing = []
    if postgres_bindir() is None:
        missing.append("PostgreSQL server (initdb, postgres)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    for tool in ("ip", "unshare", "mount", "hostname"):
        if shutil.which(tool) is None:
            missing.append(tool)
    return missing


def check_host(install: bool = True) -> None:
    """Raise :class:`StackUnavailable` unless this machine can run the stack.

    Args:
        install: Run ``scripts/services.sh install`` once when PostgreSQL, Redis or iproute2 is missing.

    Raises:
        StackUnavailable: Not root, no network namespaces, the SeaweedFS binary or a service is missing.
    """
    if sys.platform != "linux":
        raise StackUnavailable(f"the production stack needs Linux network namespaces, not {sys.platform}")
    if os.geteuid() != 0:
        raise StackUnavailable("the production stack needs root (network namespaces, mounts, the postgres user)")
    if not (Path(sys.executable).parent / "weed").is_file():
        raise StackUnavailable(f"no SeaweedFS binary in {Path(sys.executable).parent}: install the lock")
    missing = _missing_tools()
    if missing and install:
        script = REPO_ROOT / "scripts" / "services.sh"
        result = subprocess.run(["bash", str(script), "install"], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackUnavailable(
                f"missing {', '.join(missing)}, and `{script} install` failed: {result.stderr.strip()[-800:]}"
            )
        missing = _missing_tools()
    if missing:
        raise StackUnavailable(f"missing {', '.join(missing)} (run scripts/services.sh install as root)")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise StackUnavailable(
            "no `postgres` OS user to run PostgreSQL as (install Debian's postgresql)"
        ) from None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise StackUnavailable(f"`ip netns` does not work here: {listed.stderr.strip()}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ProductionStackError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _netns_names() -> list[str]:
    listed = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def _link_names() -> list[str]:
    listed = _ip("-o", "link", "show", check=False).stdout
    # "7: rtp-abcdef-v1@if2: <...>": the name ends at the first "@" or ":".
    return [line.split(":")[1].strip().split("@")[0] for line in listed.splitlines() if ":" in line]


def _run_id_of(name: str) -> str | None:
    if not name.startswith(NAME_PREFIX):
        return None
    parts = name.split("-")
    return parts[1] if len(parts) >= 3 else None


def _same_process(record: Mapping[str, Any]) -> psutil.Process | None:
    """The live process a record names, None when it exited or its pid was reused."""
    try:
        process = psutil.Process(int(record["pid"]))
        if abs(process.create_time() - float(record["create_time"])) > 1.0:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.Error, KeyError, ValueError, TypeError):
        return None
    return process


def _kill_all(processes: list[psutil.Process], timeout: float = 10.0) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def _leftovers(records: list[Mapping[str, Any]]) -> list[psutil.Process]:
    """The live processes of a crashed run: each one it started is a session leader, so its process group holds
    whatever that one forked (and may outlive it)."""
    groups = {int(r["pid"]): float(r["create_time"]) for r in records if "pid" in r and "create_time" in r}
    found = []
    for process in psutil.process_iter(["create_time"]):
        with contextlib.suppress(psutil.Error, OSError):
            started = groups.get(os.getpgid(process.pid))
            if started is not None and process.info["create_time"] >= started - 1.0:
                found.append(process)
    return found


def _remove_netns(name: str) -> None:
    # A namespace with processes left in it would live on after `ip netns del` (and keep its veth).
    pids = _ip("netns", "pids", name, check=False).stdout.split()
    victims = []
    for pid in pids:
        with contextlib.suppress(psutil.Error, ValueError):
            victims.append(psutil.Process(int(pid)))
    _kill_all(victims)
    _ip("netns", "del", name, check=False)


def remove_stale_runs() -> list[str]:
    """Remove what crashed earlier runs left: their processes, namespaces, links, folders and records.

    A run is stale when the process that started it is gone. Links and namespaces with the name prefix but no
    live record are stale too (a run that crashed before writing its record).

    Returns:
        The ids of the runs cleaned up.
    """
    live: set[str] = set()
    cleaned: set[str] = set()
    for path in sorted(RECORDS_DIR.glob("*.json")) if RECORDS_DIR.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            path.unlink(missing_ok=True)
            continue
        run_id = str(record.get("run_id") or path.stem)
        if _same_process(record.get("owner") or {}) is not None:
            live.add(run_id)
            continue
        _kill_all(_leftovers(record.get("processes") or []))
        run_dir = record.get("run_dir")
        if run_dir and Path(run_dir).name.startswith(RUN_DIR_PREFIX):
            shutil.rmtree(run_dir, ignore_errors=True)
        for leftover in record.get("files") or []:
            Path(leftover).unlink(missing_ok=True)
        cleaned.add(run_id)
        path.unlink(missing_ok=True)
    for name in _netns_names():
        run_id = _run_id_of(name)
        if run_id is not None and run_id not in live:
            _remove_netns(name)
            cleaned.add(run_id)
    for name in _link_names():
        run_id = _run_id_of(name)
        if run_id is not None and run_id not in live:
            _ip("link", "del", name, check=False)
            cleaned.add(run_id)
    for folder in RUNS_DIR.glob(f"{RUN_DIR_PREFIX}*"):
        if folder.name.removeprefix(RUN_DIR_PREFIX) not in live:
            shutil.rmtree(folder, ignore_errors=True)
    return sorted(cleaned)


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    networks = []
    listed = _ip("-4", "-o", "addr", "show", check=False).stdout
    for line in listed.splitlines():
        words = line.split()
        if "inet" in words:
            networks.append(ipaddress.ip_interface(words[words.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        words = line.split()
        if not words or words[0] in {"default", "broadcast", "local", "unreachable", "blackhole"}:
            continue
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.ip_network(words[0], strict=False))
    return networks


def _random_subnet() -> ipaddress.IPv4Network:
    used = _networks_in_use()
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{random.randint(64, 254)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise ProductionStackError("found no free 10.x.y.0/24 subnet for the stack's bridge")


def _port_free(port: int) -> bool:
    # Binding the wildcard address fails when anything listens on that port on any interface.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _pick_port(taken: set[int], with_grpc: bool = False) -> int:
    """A free port not handed out yet; ``with_grpc``: port + 10000 free too (SeaweedFS's gRPC ports)."""
    for _ in range(500):
        port = random.randint(20000, 30999)
        wanted = [port, port + 10000] if with_grpc else [port]
        if any(p in taken for p in wanted) or not all(_port_free(p) for p in wanted):
            continue
        taken.update(wanted)
        return port
    raise ProductionStackError("found no free port for the stack")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(content[-lines:])


def _redacted(command: list[str]) -> str:
    """The command line for a log, without the password of a URL in it."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", " ".join(command))


def _write_secret_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)


def _make_read_only(folder: Path) -> None:
    for directory, subdirs, files in os.walk(folder):
        for name in [*subdirs, *files]:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.lstat().st_mode) & ~0o222)
    folder.chmod(stat.S_IMODE(folder.stat().st_mode) & ~0o222)


def _base_env() -> dict[str, str]:
    """The caller's environment without anything that would point a process elsewhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_ISOLATED_PREFIXES) and key not in _PROXY_VARIABLES
    }
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------------------------------
# Processes


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    create_time: float
    # The servers that shut down by themselves get the signal alone; the others their whole process group.
    stop_signal: int = signal.SIGTERM
    signal_group: bool = True
    # How it was started: a process that was killed, or that crashed under supervision, starts the same way.
    command: list[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: Path = Path(".")
    user: str | None = None


def _stop(processes: list[_Process], timeout: float) -> None:
    """Signal each process (or its group), wait up to ``timeout`` s for all of them and theirs, KILL the rest."""
    victims: dict[int, psutil.Process] = {}
    for process in processes:
        if process.popen.poll() is not None:
            continue
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(process.popen.pid)
            victims[parent.pid] = parent
            victims.update((child.pid, child) for child in parent.children(recursive=True))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if process.signal_group:
                os.killpg(process.popen.pid, process.stop_signal)
            else:
                os.kill(process.popen.pid, process.stop_signal)
    _, alive = psutil.wait_procs(list(victims.values()), timeout=timeout)
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.popen.pid, signal.SIGKILL)
    for victim in alive:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    psutil.wait_procs(alive, timeout=5)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=5)


def seaweedfs_command(folder: Path, ip: str, ports: tuple[int, int, int, int], config: Path) -> list[str]:
    """``weed server`` with its S3 gateway, everything on ``ip``, its data and sockets in ``folder``.

    Args:
        folder: Holds ``data/`` (which must exist) and the local sockets.
        ip: The one address it binds to.
        ports: S3, master, volume and filer ports (each also needs its port + 10000 free, for gRPC).
        config: The S3 identities (JSON, ``-s3.config``).
    """
    s3_port, master, volume, filer = ports
    return [
        str(Path(sys.executable).parent / "weed"),
        "server",
        f"-dir={folder / 'data'}",
        f"-ip={ip}",
        f"-ip.bind={ip}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.config={config}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        # Off: the Iceberg and Lance endpoints (fixed ports), telemetry (no internet), the 10 s pre-stop wait.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        # Small volumes, as many as needed: the default 30 GB volume size would want that much disk.
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
        f"-s3.localSocket={folder / 's3.sock'}",
        f"-filer.localSocket={folder / 'filer.sock'}",
    ]


class _StatsdSink:
    """A StatsD "server": every datagram received on ``address`` is appended to ``path``, one line per metric."""

    def __init__(self, host: str, taken: set[int], path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(100):
            try:
                self._socket.bind((host, _pick_port(taken)))
                break
            except OSError:  # free for TCP, taken for UDP: pick another
                continue
        else:
            self._socket.close()
            raise ProductionStackError("found no free UDP port for the StatsD sink")
        self._socket.settimeout(0.5)  # so that the thread notices close() within half a second
        self.address: tuple[str, int] = self._socket.getsockname()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-sink", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        with self.path.open("ab") as out:
            while not self._closed.is_set():
                try:
                    data = self._socket.recv(65535)
                except TimeoutError:
                    continue
                except OSError:
                    return
                out.write(data.rstrip(b"\n") + b"\n")
                out.flush()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._socket.close()


# --------------------------------------------------------------------------------------------------------------
# The launcher


class _Launcher:
    """Starts the stack step by step and remembers everything it made, so that :meth:`stop` undoes exactly that."""

    def __init__(self, root: Path, projects: Path, workers: int, extra_env: Mapping[str, str]) -> None:
        if not 1 <= workers <= 50:
            raise ValueError(f"workers must be between 1 and 50, got {workers}")
        self.root = root.resolve()
        self.projects = projects.resolve()
        self.worker_count = workers
        self.extra_env = dict(extra_env)
        self.run_id = secrets.token_hex(3)
        self.run_dir = RUNS_DIR / f"{RUN_DIR_PREFIX}{self.run_id}"
        self.log_dir = self.root / "logs"
        self.record_path = RECORDS_DIR / f"{self.run_id}.json"
        self.bridge = f"{NAME_PREFIX}{self.run_id}-br"
        self.netns: list[str] = []
        self.veths: list[str] = []
        self.processes: list[_Process] = []
        self.one_shots: list[_Process] = []
        self.logs: dict[str, Path] = {}
        self.leftover_files: list[str] = []
        self.statsd: _StatsdSink | None = None
        self.workers: list[Worker] = []
        self.bridge_made = False
        self.pids: dict[str, int] = {}  # live: a process started again gets its new pid here
        self.restarts: list[str] = []
        self.held_down: set[str] = set()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.supervisor: threading.Thread | None = None

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def _save_record(self) -> None:
        me = psutil.Process()
        record = {
            "run_id": self.run_id,
            "owner": {"pid": me.pid, "create_time": me.create_time()},
            "run_dir": str(self.run_dir),
            "processes": [
                {"name": p.name, "pid": p.popen.pid, "create_time": p.create_time} for p in self.processes
            ],
            "files": self.leftover_files,
        }
        RECORDS_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(self.record_path)

    def _log(self, name: str) -> Path:
        path = self.log_dir / f"{name}.log"
        self.logs[name] = path
        return path

    def _spawn(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        cwd: Path,
        *,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        signal_group: bool = True,
    ) -> _Process:
        log_path = self._log(name)
        with log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} {_redacted(command)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                command,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
            )
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            create_time = time.time()
        process = _Process(
            name, popen, log_path, create_time, stop_signal, signal_group, list(command), dict(env), cwd, user
        )
        self.processes.append(process)
        self.pids[name] = popen.pid
        self._save_record()
        return process

    def _run_once(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        cwd: Path,
        timeout: float,
        *,
        user: str | None = None,
    ) -> str:
        """Run a one-shot command to its end (output to its log); returns its stdout."""
        log_path = self._log(name)
        with log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} {_redacted(command)}\n".encode())
            log.flush()
            try:
                result = subprocess.run(
                    command,
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,
                    user=user,
                    timeout=max(timeout, 1.0),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ProductionStackError(f"{name} took more than {timeout:.0f} s; see {log_path}") from None
            log.write(result.stdout)
        if result.returncode != 0:
            raise ProductionStackError(
                f"{name} failed (exit {result.returncode}); end of {log_path}:\n{_tail(log_path)}"
            )
        return result.stdout.decode(errors="replace")

    def _check_alive(self) -> None:
        for process in self.processes:
            code = process.popen.poll()
            if code is not None:
                raise ProductionStackError(
                    f"{process.name} exited during start-up (exit {code}); end of {process.log}:\n"
                    f"{_tail(process.log)}"
                )

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float, interval: float = 0.5) -> None:
        """Poll ``ready`` until it holds; fail at once when a process dies, or at the deadline."""
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ProductionStackError(f"{what} was not ready in time; logs in {self.log_dir}")
            time.sleep(interval)

    # -- faults: a process killed, started again, or restarted by a supervisor -----------------------------------

    def _named(self, name: str) -> _Process:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"no process named {name!r}; the stack runs {[p.name for p in self.processes]}")

    def kill(self, name: str) -> None:
        """SIGKILL a process and everything it started, as a crash would; it stays down until :meth:`start_again`
        (the supervisor leaves it alone)."""
        with self.lock:
            process = self._named(name)
            self.held_down.add(name)
        victims: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(process.popen.pid)
            victims = [parent, *parent.children(recursive=True)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.popen.pid, signal.SIGKILL)
        for victim in victims:  # a child that left the process group goes too
            with contextlib.suppress(psutil.Error):
                victim.kill()
        psutil.wait_procs(victims, timeout=10)
        process.popen.wait(timeout=10)
        with process.log.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} killed (SIGKILL) by the test\n".encode())

    def start_again(self, name: str) -> int:
        """Start a process that was killed or that exited, the way it was started first; returns its new pid."""
        with self.lock:
            old = self._named(name)
            if old.popen.poll() is None:
                raise ProductionStackError(f"{name} is still running (pid {old.popen.pid})")
            self.processes.remove(old)
            new = self._spawn(
                name, old.command, old.env, old.cwd, user=old.user, stop_signal=old.stop_signal,
                signal_group=old.signal_group,
            )  # fmt: skip
            self.held_down.discard(name)
            return new.popen.pid

    def supervise(self, interval: float = 1.0) -> None:
        """From now on, start again every long-running process that exits (not one a test killed), as a service
        manager with ``restart: unless-stopped`` does in production; each restart is listed in ``restarts``."""
        with self.lock:
            if self.supervisor is not None:
                return

            def loop() -> None:
                while not self.stopping.wait(interval):
                    with self.lock:
                        down = [p for p in self.processes if p.popen.poll() is not None]
                        exited = [p for p in down if p.name not in self.held_down]
                        for process in exited:
                            self.restarts.append(f"{process.name} (exit {process.popen.returncode})")
                            with process.log.open("ab") as log:
                                log.write(f"=== {time.strftime('%H:%M:%S')} exited: started again\n".encode())
                            self.start_again(process.name)

            self.supervisor = threading.Thread(target=loop, name="stack-supervisor", daemon=True)
            self.supervisor.start()

    # -- network -----------------------------------------------------------------------------------------------

    def _create_network(self) -> None:
        subnet = _random_subnet()
        hosts = list(subnet.hosts())
        self.subnet = str(subnet)
        self.host_ip = str(hosts[0])
        self.worker_ips = [str(hosts[i]) for i in range(1, self.worker_count + 1)]
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
        except ProductionStackError as error:
            raise StackUnavailable(f"cannot create a Linux bridge here: {error}") from None
        self.bridge_made = True
        _ip("addr", "add", f"{self.host_ip}/{subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for index, ip in enumerate(self.worker_ips, start=1):
            netns = f"{NAME_PREFIX}{self.run_id}-w{index}"
            veth = f"{NAME_PREFIX}{self.run_id}-v{index}"
            peer = f"{NAME_PREFIX}{self.run_id}-p{index}"
            try:
                _ip("netns", "add", netns)
            except ProductionStackError as error:
                raise StackUnavailable(f"cannot create network namespaces here: {error}") from None
            self.netns.append(netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", netns)
            self.veths.append(veth)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", netns, "link", "set", peer, "name", "eth0")
            _ip("-n", netns, "addr", "add", f"{ip}/{subnet.prefixlen}", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")

    def _remove_network(self) -> None:
        for netns in self.netns:
            _remove_netns(netns)
        for veth in self.veths:  # gone with its namespace's peer, unless that failed
            if veth in _link_names():
                _ip("link", "del", veth, check=False)
        if self.bridge_made:
            _ip("link", "del", self.bridge, check=False)

    # -- services ----------------------------------------------------------------------------------------------

    def _start_postgres(self, port: int, deadline: float) -> None:
        import psycopg2

        bindir = postgres_bindir()
        assert bindir is not None  # check_host made sure
        folder = self.run_dir / "postgres"
        self.pg_socket = folder / "socket"
        data = folder / "data"
        self.pg_socket.mkdir(parents=True)
        for path in (folder, self.pg_socket):
            shutil.chown(path, "postgres", "postgres")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "HOME": str(folder)}
        self._run_once(
            "initdb",
            [
                str(bindir / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # a throw-away cluster: no fsync at all, here and below
            ],
            env,
            folder,
            timeout=deadline - time.monotonic(),
            user="postgres",
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{self.host_ip}'\n"
                f"port = {port}\n"
                f"unix_socket_directories = '{self.pg_socket}'\n"
                "max_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        # The superuser only over the socket; each application user only into its own database, over TCP.
        (data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            f"host airflow airflow {self.subnet} scram-sha-256\n"
            f"host mlflow mlflow {self.subnet} scram-sha-256\n"
        )
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to disconnect).
        self._spawn(
            "postgres",
            [str(bindir / "postgres"), "-D", str(data)],
            env,
            folder,
            user="postgres",
            stop_signal=signal.SIGINT,
            signal_group=False,
        )
        self.pg_port = port
        self.postgres_admin_dsn = f"host={self.pg_socket} port={port} user=postgres dbname=postgres"

        def accepts() -> bool:
            try:
                psycopg2.connect(self.postgres_admin_dsn, connect_timeout=2).close()
            except psycopg2.OperationalError:
                return False
            return True

        self._wait("PostgreSQL", accepts, deadline, interval=0.2)
        self.db_passwords = {name: secrets.token_urlsafe(18) for name in ("airflow", "mlflow")}
        admin = psycopg2.connect(self.postgres_admin_dsn)
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                for name, password in self.db_passwords.items():
                    cursor.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (password,))
                    cursor.execute(f"CREATE DATABASE {name} OWNER {name}")
        finally:
            admin.close()
        for name in self.db_passwords:  # the way the applications come in: TCP on the bridge, scram-sha-256
            psycopg2.connect(self._dsn(name), connect_timeout=5).close()

    def _dsn(self, name: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://{name}:{self.db_passwords[name]}@{self.host_ip}:{self.pg_port}/{name}"

    def _start_redis(self, port: int) -> None:
        folder = self.run_dir / "redis"
        folder.mkdir(parents=True)
        self.redis_password = secrets.token_urlsafe(18)
        conf = folder / "redis.conf"
        # In a file, not on the command line: the password stays out of `ps`.
        _write_secret_file(
            conf,
            f"bind {self.host_ip}\nport {port}\nrequirepass {self.redis_password}\n"
            f'save ""\nappendonly no\ndir {folder}\ndaemonize no\nprotected-mode yes\n',
        )
        self._spawn("redis", ["redis-server", str(conf)], _base_env(), folder)
        self.redis_url = f"redis://:{self.redis_password}@{self.host_ip}:{port}/0"

    def _redis_ready(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _start_seaweedfs(self, taken: set[int]) -> None:
        folder = self.run_dir / "seaweedfs"
        (folder / "data").mkdir(parents=True)  # weed does not create -dir itself
        self.s3 = {
            name: S3Identity(name, f"{name.upper()}{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30))
            for name in ("admin", "platform", "mlflow")
        }

        def scoped(bucket: str) -> list[str]:
            return [f"{action}:{bucket}" for action in ("Read", "Write", "List", "Tagging")]

        actions = {
            "admin": ["Admin", "Read", "Write", "List", "Tagging"],
            "platform": scoped(DATA_BUCKET),
            "mlflow": scoped(MLFLOW_BUCKET),
        }
        config = {
            "identities": [
                {
                    "name": identity.name,
                    "credentials": [{"accessKey": identity.access_key, "secretKey": identity.secret_key}],
                    "actions": actions[identity.name],
                }
                for identity in self.s3.values()
            ]
        }
        config_path = folder / "s3.json"
        _write_secret_file(config_path, json.dumps(config, indent=2))
        s3_port, master, volume, filer = (_pick_port(taken, with_grpc=True) for _ in range(4))
        ip = self.host_ip
        command = seaweedfs_command(folder, ip, (s3_port, master, volume, filer), config_path)
        # Its gRPC sockets always go to /tmp/seaweedfs-<role>-grpc-<port>.sock.
        for role, port in (("s3", s3_port), ("master", master), ("volume", volume), ("filer", filer)):
            self.leftover_files.append(f"/tmp/seaweedfs-{role}-grpc-{port + 10000}.sock")
        self._spawn("seaweedfs", command, _base_env(), folder)
        self.s3_endpoint = f"http://{ip}:{s3_port}"

    def _s3_client(self, identity: S3Identity) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=S3_REGION,
            aws_access_key_id=identity.access_key,
            aws_secret_access_key=identity.secret_key,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )

    def _buckets_ready(self) -> bool:
        """Create both buckets (admin), then write and delete a probe in each with its own identity."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            admin = self._s3_client(self.s3["admin"])
            existing = {bucket["Name"] for bucket in admin.list_buckets().get("Buckets", [])}
            for bucket in (DATA_BUCKET, MLFLOW_BUCKET):
                if bucket not in existing:
                    admin.create_bucket(Bucket=bucket)
            for identity, bucket in ((self.s3["platform"], DATA_BUCKET), (self.s3["mlflow"], MLFLOW_BUCKET)):
                client = self._s3_client(identity)
                client.put_object(Bucket=bucket, Key="_probe", Body=b"ok")
                client.delete_object(Bucket=bucket, Key="_probe")
        except (BotoCoreError, ClientError):
            return False
        return True

    def _start_mlflow(self, port: int) -> None:
        folder = self.run_dir / "mlflow"
        folder.mkdir(parents=True)
        identity = self.s3["mlflow"]
        env = {
            **_base_env(),
            # Off, or it starts job workers that outlive a quick SIGTERM.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            # The bucket credentials live here only: clients upload and download through the server.
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": identity.access_key,
            "AWS_SECRET_ACCESS_KEY": identity.secret_key,
            "AWS_DEFAULT_REGION": S3_REGION,
        }
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            self._dsn("mlflow"),
            "--artifacts-destination",
            f"s3://{MLFLOW_BUCKET}/",
            "--serve-artifacts",
            "--host",
            self.host_ip,
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        self._spawn("mlflow", command, env, folder)
        self.mlflow_url = f"http://{self.host_ip}:{port}"

    # -- Airflow -----------------------------------------------------------------------------------------------

    def _airflow_env(self, api_port: int, trigger_log_port: int) -> dict[str, str]:
        from cryptography.fernet import Fernet

        home = self.root / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        self.admin_password = secrets.token_urlsafe(12)
        tasks_password = secrets.token_urlsafe(12)  # the tasks' own user, for the runs' notes
        passwords = home / "simple_auth_manager_passwords.json.generated"
        users = {ADMIN_USERNAME: self.admin_password, SERVICE_USERNAME: tasks_password}
        _write_secret_file(passwords, json.dumps(users) + "\n")
        self.airflow_url = f"http://{self.host_ip}:{api_port}"
        platform = self.s3["platform"]
        env = {**_base_env(), **_AIRFLOW_DEFAULTS}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self._dsn("airflow", "postgresql+psycopg2"),
                "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": self._dsn("airflow", "db+postgresql"),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(64),
                # Signs the api-server's requests to the workers' log servers: the same on every machine.
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
                "AIRFLOW__API__BASE_URL": self.airflow_url,
                "AIRFLOW__API__HOST": self.host_ip,
                "AIRFLOW__API__PORT": str(api_port),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USERNAME}:admin,{SERVICE_USERNAME}:user",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(WORKER_LOG_SERVER_PORT),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
                "RETRAINER_PROJECTS_DIR": str(self.projects),
                "RETRAINER_GX_ROOT": str(REPO_ROOT / "great_expectations"),
                "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "http", "host": self.mlflow_url}),
                "AIRFLOW_CONN_AIRFLOW_API": json.dumps(
                    {
                        "conn_type": "http",
                        "host": self.airflow_url,
                        "login": SERVICE_USERNAME,
                        "password": tasks_password,
                    }
                ),
                "AWS_ACCESS_KEY_ID": platform.access_key,
                "AWS_SECRET_ACCESS_KEY": platform.secret_key,
                "AWS_ENDPOINT_URL": self.s3_endpoint,
                "AWS_DEFAULT_REGION": S3_REGION,
            }
        )
        if self.statsd is not None:
            host, port = self.statsd.address
            env.update(
                {
                    "AIRFLOW__METRICS__STATSD_ON": "True",
                    "AIRFLOW__METRICS__STATSD_HOST": host,
                    "AIRFLOW__METRICS__STATSD_PORT": str(port),
                }
            )
        env.update(self.extra_env)
        return env

    def _pools_json(self, env: Mapping[str, str], deadline: float) -> str:
        """One pool per project file: ``retrain_<name>`` with 1 slot."""
        retrainer = Path(sys.executable).parent / "retrainer"
        probe = subprocess.run(
            [str(retrainer), "airflow-pools", "--help"], env=dict(env), capture_output=True, check=False
        )
        if probe.returncode == 0:  # the platform says which pools it needs
            return self._run_once(
                "retrainer-airflow-pools",
                [str(retrainer), "airflow-pools", "--projects", str(self.projects)],
                env,
                self.root,
                timeout=deadline - time.monotonic(),
            )
        pools = {}
        for path in sorted(self.projects.glob("*.yaml")):
            name = (yaml.safe_load(path.read_text()) or {}).get("name")
            if name:
                pools[f"retrainer_{name}"] = {
                    "slots": 1,
                    "description": f"One cycle at a time of project {name} ({path.name})",
                    "include_deferred": False,
                }
        return json.dumps(pools, indent=2)

    def _copy_worker_code(self, index: int) -> Path:
        folder = self.run_dir / f"worker-{index}"
        code = folder / "code"
        skip = shutil.ignore_patterns("__pycache__", "*.pyc", "uncommitted")
        for name in CODE_FOLDERS:
            shutil.copytree(REPO_ROOT / name, code / name, ignore=skip)
        shutil.copytree(self.projects, code / "projects", ignore=skip)
        # Byte-compiled now, while it is writable: the read-only copy would be compiled again by every task.
        for name in ("include", "plugins", "dags"):
            compileall.compile_dir(str(code / name), quiet=1)
        _make_read_only(code)
        for sub in ("home", "tmp"):
            (folder / sub).mkdir(parents=True)
        return folder

    def _worker_env(self, base: Mapping[str, str], folder: Path) -> dict[str, str]:
        code = folder / "code"
        extra = base.get("PYTHONPATH", "")  # the caller's (or extra_env's) entries come after the copy
        env = {key: value for key, value in base.items() if not key.startswith("MLFLOW_")}
        env.update(
            {
                "AIRFLOW_HOME": str(folder / "home"),
                "TMPDIR": str(folder / "tmp"),
                # Ahead of the venv's editable install (a .pth entry for the checkout's include/).
                "PYTHONPATH": os.pathsep.join(filter(None, [str(code / "include"), str(code / "plugins"), extra])),
                "AIRFLOW__CORE__DAGS_FOLDER": str(code / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(code / "plugins"),
                "RETRAINER_PROJECTS_DIR": str(code / "projects"),
                "RETRAINER_GX_ROOT": str(code / "great_expectations"),
                # Its UTS hostname is its IP; the default (a reverse DNS lookup) could name something else.
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "socket.gethostname",
            }
        )
        for key in [key for key in env if key.startswith("MLFLOW_")]:  # also any that extra_env brought
            del env[key]
        return env

    def _worker_command(self, worker: Worker, command: list[str]) -> list[str]:
        inside_tmp = any(
            str(path).startswith("/tmp/") for path in (REPO_ROOT, Path(sys.prefix).resolve(), worker.folder)
        )
        # Masking /tmp would hide the checkout or the venv when they live there: then the worker shares /tmp.
        private_tmp = "" if inside_tmp else str(worker.tmp)
        return [
            "ip",
            "netns",
            "exec",
            worker.netns,
            "unshare",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _WORKER_WRAPPER,
            "sh",
            worker.ip,
            str(REPO_ROOT),
            str(worker.code),
            private_tmp,
            *command,
        ]

    def _probe_worker(self, worker: Worker, deadline: float) -> None:
        """Check a worker's "machine" before it starts: its imports, hostname, mounts, and the way to the host."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind((self.host_ip, 0))
            listener.listen(1)
            command = self._worker_command(
                worker,
                [
                    sys.executable,
                    "-c",
                    _WORKER_PROBE,
                    self.host_ip,
                    str(listener.getsockname()[1]),
                    str(REPO_ROOT),
                    str(worker.code / "include"),
                    str(worker.home),
                ],
            )
            output = self._run_once(
                f"{worker.name}-probe", command, worker.env, worker.home, timeout=deadline - time.monotonic()
            )
        found = json.loads(output.strip().splitlines()[-1])
        problems = []
        if not found["retrainer"].startswith(str(worker.code / "include")):
            problems.append(f"imports retrainer from {found['retrainer']}, not from its copy")
        if not found["retrainer_provider"].startswith(str(worker.code / "plugins")):
            problems.append(f"imports retrainer_provider from {found['retrainer_provider']}, not from its copy")
        if found["hostname"] != worker.ip:
            problems.append(f"has hostname {found['hostname']!r}, not {worker.ip}")
        if found["repo_writable"] or found["code_writable"]:
            problems.append("can write to the checkout or to its code copy")
        if not found["home_writable"]:
            problems.append("cannot write to its home")
        if problems:
            raise ProductionStackError(f"{worker.name} {'; '.join(problems)}")

    def _workers_answer(self) -> bool:
        from celery import Celery

        # A bare Celery app on the same broker: Airflow's app would need Airflow's configuration in this process.
        with Celery("retrainer-production-probe", broker=self.redis_url, set_as_current=False) as app:
            replies = app.control.ping(destination=[w.celery_hostname for w in self.workers], timeout=1.0)
        answered = {name for reply in replies for name in reply}
        return answered >= {w.celery_hostname for w in self.workers}

    def _airflow_healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.airflow_url}/api/v2/monitor/health", timeout=3.0, trust_env=False)
            health = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return False
        return all((health.get(key) or {}).get("status") == "healthy" for key in _HEALTH_KEYS)

    def _mlflow_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.mlflow_url}/health", timeout=3.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    # -- the whole ---------------------------------------------------------------------------------------------

    def start(self, timeout: float) -> ProductionStack:
        deadline = time.monotonic() + timeout
        # The record first, before anything exists: whatever a crash leaves behind, the next run cleans up (and a
        # concurrent run's clean-up leaves this one alone).
        self._save_record()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, mode=0o755)
        self.run_dir.chmod(0o755)  # the postgres user must reach its folder in here
        self._create_network()

        taken: set[int] = {WORKER_LOG_SERVER_PORT}
        self.statsd = _StatsdSink(self.host_ip, taken, self._log("statsd"))
        pg_port, redis_port, mlflow_port, api_port, trigger_log_port = (_pick_port(taken) for _ in range(5))

        # The slow starters first, so that they come up while the rest is set up.
        self._start_seaweedfs(taken)
        self._start_redis(redis_port)
        self._start_postgres(pg_port, deadline)
        self._start_mlflow(mlflow_port)

        env = self._airflow_env(api_port, trigger_log_port)
        airflow_bin = str(Path(sys.executable).parent / "airflow")
        self._wait("Redis", self._redis_ready, deadline, interval=0.2)
        self._run_once(
            "airflow-db-migrate", [airflow_bin, "db", "migrate"], env, self.root, deadline - time.monotonic()
        )
        pools = self.root / "airflow" / "pools.json"
        pools.write_text(self._pools_json(env, deadline))
        importer = self._spawn(
            "airflow-pools-import", [airflow_bin, "pools", "import", str(pools)], env, self.root
        )
        # One-shot: it exits by itself, which _check_alive would call a crash; stop() still ends it if need be.
        self.processes.remove(importer)
        self.pids.pop(importer.name)
        self.one_shots.append(importer)
        for name, command in (
            ("api-server", [airflow_bin, "api-server", "--host", self.host_ip, "--port", str(api_port)]),
            ("scheduler", [airflow_bin, "scheduler"]),
            ("dag-processor", [airflow_bin, "dag-processor"]),
            ("triggerer", [airflow_bin, "triggerer"]),
        ):
            self._spawn(name, command, env, self.root)

        for index, (netns, ip) in enumerate(zip(self.netns, self.worker_ips, strict=True), start=1):
            folder = self._copy_worker_code(index)
            worker = Worker(
                name=f"worker-{index}",
                celery_hostname=f"w{index}@{ip}",
                ip=ip,
                netns=netns,
                folder=folder,
                code=folder / "code",
                home=folder / "home",
                tmp=folder / "tmp",
                log_file=self.log_dir / f"worker-{index}.log",
                env=MappingProxyType(self._worker_env(env, folder)),
            )
            self._probe_worker(worker, deadline)
            command = [
                airflow_bin,
                "celery",
                "worker",
                "--concurrency",
                "1",
                "--celery-hostname",
                worker.celery_hostname,
            ]
            self._spawn(worker.name, self._worker_command(worker, command), worker.env, worker.home)
            self.workers.append(worker)

        self._wait_pools_imported(importer, deadline)
        self._wait("SeaweedFS (S3 and both buckets)", self._buckets_ready, deadline)
        self._wait("MLflow (GET /health)", self._mlflow_healthy, deadline)
        self._wait("Airflow (GET /api/v2/monitor/health)", self._airflow_healthy, deadline)
        self._wait("the Celery workers (ping)", self._workers_answer, deadline)
        return self._describe(env)

    def _wait_pools_imported(self, importer: _Process, deadline: float) -> None:
        self._wait("`airflow pools import`", lambda: importer.popen.poll() is not None, deadline)
        if importer.popen.returncode != 0:
            raise ProductionStackError(
                f"`airflow pools import` failed; end of {importer.log}:\n{_tail(importer.log)}"
            )

    def _describe(self, env: Mapping[str, str]) -> ProductionStack:
        assert self.statsd is not None
        return ProductionStack(
            run_id=self.run_id,
            root=self.root,
            run_dir=self.run_dir,
            repo=REPO_ROOT,
            projects=self.projects,
            bridge=self.bridge,
            subnet=self.subnet,
            host_ip=self.host_ip,
            airflow_url=self.airflow_url,
            airflow_username=ADMIN_USERNAME,
            airflow_password=self.admin_password,
            mlflow_url=self.mlflow_url,
            s3_endpoint=self.s3_endpoint,
            s3_region=S3_REGION,
            s3_admin=self.s3["admin"],
            s3_platform=self.s3["platform"],
            s3_mlflow=self.s3["mlflow"],
            data_bucket=DATA_BUCKET,
            mlflow_bucket=MLFLOW_BUCKET,
            airflow_db_dsn=self._dsn("airflow"),
            mlflow_db_dsn=self._dsn("mlflow"),
            postgres_admin_dsn=self.postgres_admin_dsn,
            redis_url=self.redis_url,
            workers=tuple(self.workers),
            log_dir=self.log_dir,
            logs=MappingProxyType(dict(self.logs)),
            pids=MappingProxyType(self.pids),
            control=self,
            control_env=MappingProxyType(dict(env)),
            statsd_address=self.statsd.address,
            statsd_log=self.statsd.path,
        )

    def stop(self) -> None:
        """Undo everything :meth:`start` did, as far as it got; raise at the end if something could not be."""
        failures: list[str] = []
        self.stopping.set()  # the supervisor must not start again what is stopped here
        if self.supervisor is not None:
            self.supervisor.join(timeout=30)

        def attempt(what: str, action: Callable[[], None]) -> None:
            try:
                action()
            except Exception as error:  # keep cleaning up: report every failure at the end
                failures.append(f"{what}: {error!r}")

        # The applications first (SeaweedFS with them: its filer drains for 15 s), the databases they use last.
        infrastructure = {"postgres", "redis"}
        applications = [p for p in self.processes + self.one_shots if p.name not in infrastructure]
        attempt("stop the applications", lambda: _stop(applications, 30))
        attempt("stop the databases", lambda: _stop([p for p in self.processes if p.name in infrastructure], 20))
        if self.statsd is not None:
            attempt("close the StatsD sink", self.statsd.close)
        for worker in self.workers:  # the run folder goes, the task logs stay with the others
            if worker.task_log_folder.is_dir():
                target = self.log_dir / f"{worker.name}-tasks"
                attempt(f"keep {worker.name}'s task logs", lambda w=worker, t=target: _copy_logs(w, t))
        attempt("remove the network", self._remove_network)
        attempt("remove the run folder", lambda: shutil.rmtree(self.run_dir) if self.run_dir.exists() else None)
        for leftover in self.leftover_files:
            attempt(f"remove {leftover}", lambda path=leftover: Path(path).unlink(missing_ok=True))
        left = [
            p.name for p in self.processes if _same_process({"pid": p.popen.pid, "create_time": p.create_time})
        ]
        if left:
            failures.append(f"still running: {', '.join(left)}")
        if not failures:
            self.record_path.unlink(missing_ok=True)
        else:  # the next run's remove_stale_runs finishes the job
            raise ProductionStackError("the production stack did not clean up: " + "; ".join(failures))


def _copy_logs(worker: Worker, target: Path) -> None:
    shutil.copytree(worker.task_log_folder, target, dirs_exist_ok=True)


@contextmanager
def production_stack(
    root: Path,
    projects: Path,
    *,
    workers: int = 2,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> Iterator[ProductionStack]:
    """Start the production stack, yield where everything is, and stop and clean up everything on exit.

    Stale leftovers of crashed earlier runs (their processes, namespaces, links and folders) are removed first.

    Args:
        root: A folder of the caller's (e.g. a pytest tmp path): process logs and the control plane's home.
        projects: The project files (``RETRAINER_PROJECTS_DIR``); each worker gets a copy made at start.
        workers: Number of Celery worker "machines".
        extra_env: Further environment of every Airflow process (control plane and workers); ``MLFLOW_*``
            variables never reach a worker, and a worker's code copy comes before any ``PYTHONPATH``.
        timeout: Seconds for the whole start-up.

    Raises:
        StackUnavailable: This machine cannot run it (not root, no ``ip netns``, no PostgreSQL or Redis).
        ProductionStackError: A process died during start-up (the message holds the end of its log), a service
            was not ready within ``timeout``, or the clean-up failed.
    """
    check_host()
    remove_stale_runs()
    launcher = _Launcher(Path(root), Path(projects), workers, extra_env or {})
    try:
        stack = launcher.start(timeout)
    except BaseException:
        with contextlib.suppress(ProductionStackError):  # the start-up error is the one to see
            launcher.stop()
        raise
    try:
        yield stack
    finally:
        launcher.stop()
