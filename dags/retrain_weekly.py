"""Retraining DAGs, three per project file in ``projects/`` (or ``RETRAINER_PROJECTS_DIR``).

- ``retrain_<project>``: the retraining cycle, weekly or on a drift alert.
- ``monitor_<project>``: when batches or late labels land, validate the batches and measure data drift, judge
  the champion on the late labels (concept drift); raise a drift alert if a rule fires, which starts
  ``retrain_<project>`` within seconds.
- ``rollback_<project>``: triggered by hand with a target version and a reason; moves ``@champion`` back and
  records the move in the model's alias history, like ``retrainer rollback``.

This file only wires steps. The work is done by ``retrainer.steps``; tasks hand each other batch ids, run ids
and small typed results through XCom, never data. Heavy libraries are imported inside the tasks, at run time.
Nothing assumes that two tasks run on the same machine: the first task resolves the project file once and
every other task uses that snapshot; MLflow is reached through the ``mlflow_default`` connection; data,
reports and Great Expectations results live in the project's data root (a folder or an S3 prefix).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, AssetOrTimeSchedule, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.timetables.events import EventsTimetable
from airflow.timetables.trigger import CronTriggerTimetable

from retrainer.config import ProjectConfig
from retrainer.projects import pool_name, scan_projects
from retrainer_provider.assets import batches_landed, drift_alert, labels_arrived
from retrainer_provider.exceptions import TaskRejected, final_rejection
from retrainer_provider.links import ModelVersionLink, attach
from retrainer_provider.operators import trainer_operator

if TYPE_CHECKING:
    from retrainer.alerts import ReceivedAlert
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)

PROJECTS_DIR = Path(os.environ.get("RETRAINER_PROJECTS_DIR", Path(__file__).resolve().parents[1] / "projects"))

DOC = """
### Weekly retraining of `{model}`

{description}

Runs start on the weekly cron (`{cron}` UTC), on a **drift alert** (an event on the asset
`drift_alert_{name}`: posted through the REST API, or a JSON file dropped into `{inbox}`), or by hand.
The run's type says which (`scheduled`, `asset_triggered`, `manual`), and its first task logs the alert.
An alert forces a retrain on the newest window even when no new batch arrived.

**resolve_project** reads the project file once; every other task of the run uses that snapshot. Then every
run processes the batches whose period ended by its cutoff (the cron tick, or the `cutoff` param):

1. **ingest** registers batches that landed in `{root}/landing` (content hash, rows, period).
2. **validate** checks each new batch against the Great Expectations suite `{suite}`. A failing batch is
   moved to `quarantine/` with its report and the run stops here: nothing is trained, the champion is untouched.
3. **drift** compares the new batches with the champion's training data (Evidently; report in MLflow).
4. **plan_training** decides whether the cycle trains (new data, an alert or `force`) and on which window;
   **train** runs `retrainer train` on the `{backend}` backend (a subprocess, a container of `{image}`, or a
   Kubernetes pod): a candidate on the newest {window} accepted batches, holding out the newest
   {holdout:.0%} of rows. Only its MLflow run id comes back.
5. **evaluate** scores candidate and champion on the same held-out rows ({metric}).
6. **promote** registers the candidate; `@champion` moves to it only if the paired bootstrap of the held-out
   rows shows it better ({rule}: {rule_text}). The decision, the difference with its interval and the
   reason are tags on the model version.{approval_doc}
7. **record** writes the cycle's outcome (`retrainer report` prints them all as a table), sends the
   project's metrics and sets the run's **note**: what it decided, e.g. `promoted v9: rmse 28.6 vs 30.4 of v8
   (-5.9%)`. **champion_moved** shows the outcome in the grid: green when `@champion` moved, skipped (pink) when
   the champion stayed. `promote` links to the model version, `drift` to the Evidently report and `validate`
   to its Data Docs page (the task's *Details*); the DAG's **Model** tab shows the model's whole life.

The data steps (ingest, validate, and the monitor's) run in the pool `{pool}`, one at a time, so that this
DAG and the drift monitor never change the batch catalog at once.

Params for manual runs: `force` (retrain without new data), `dry_run` (decide, register nothing),
`window_batches`, `max_train_rows`, `cutoff` (ISO time; default: the run's data interval end or now).
"""

TRAIN_DOC = """Runs the planned `retrainer train` command on the project's `training.backend`. A failure shows the
trainer's exit code (137: killed for memory) and its last log lines; no model version is registered. A trainer
killed for memory at its limit is not retried (it would die the same way): raise `training.memory`."""

# The cycle's steps whose results `record` collects: task id -> field of the cycle record.
STEP_TASKS = {
    "gate": "gate",
    "ingest": "ingest",
    "validate": "validation",
    "drift": "drift",
    "train": "training",
    "evaluate": "evaluation",
    "promote": "decision",
}
APPROVE_DOC = """The reviewer's step: approve or reject the promotion the gate allowed (see *Required actions*).
Skipped when the gate rejected. The answer, with who gave it, goes to `conclude_approval`."""

# With promotion.approval: required, the reviewer's answer replaces promote's decision.
CONCLUDE_TASK = "conclude_approval"

APPROVAL_DOC = """
   **approve** waits for a reviewer (Airflow UI, *Required actions*) whenever the gate promotes: the version
   is registered but `@champion` stays until someone approves; no answer within {timeout:g} minutes rejects.
   **conclude_approval** then moves the alias (if the champion is still the one compared with) or records
   the rejection, with who answered, in the alias history and on the version."""

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
}


def _cutoff(context: dict[str, Any]) -> str:
    """The cycle's cutoff: the ``cutoff`` param, else the data interval end, else when the run was due."""
    params = context["params"]
    if params.get("cutoff"):
        return str(params["cutoff"])
    end = context.get("data_interval_end")
    if end is not None:
        return end.isoformat()
    return context["dag_run"].run_after.isoformat()


def _trigger(context: dict[str, Any]) -> str:
    """Why the run started: scheduled, manual, backfill or drift_alert."""
    run_type = context["dag_run"].run_type
    run_type = str(getattr(run_type, "value", run_type))
    return "drift_alert" if run_type == "asset_triggered" else run_type


def _alerts(context: dict[str, Any]) -> list[ReceivedAlert]:
    """The alerts whose asset events started this run (none for scheduled and manual runs)."""
    from retrainer.alerts import alerts_from_events

    events = context.get("triggering_asset_events") or {}
    return alerts_from_events([dict(event.extra or {}) for batch in events.values() for event in batch])


def _landings(context: dict[str, Any]) -> list[str]:
    """What the landing and labels watchers announced, when their events started this run (the monitor)."""
    from retrainer.alerts import landing_events

    events = context.get("triggering_asset_events") or {}
    return landing_events([dict(event.extra or {}) for batch in events.values() for event in batch])


def _cycle_id(context: dict[str, Any]) -> str:
    from retrainer.steps import safe_id

    return safe_id(context["dag_run"].run_id)


def _project(snapshot: dict[str, Any]) -> ProjectConfig:
    """The project as ``resolve_project`` resolved it for this run."""
    from retrainer.config import ProjectSnapshot

    return ProjectSnapshot.model_validate(snapshot).config


def _tracking() -> Tracking:
    """The MLflow server of the ``mlflow_default`` connection."""
    from retrainer_provider.hooks.mlflow import MlflowHook

    return MlflowHook().get_tracking()


def _set_note(context: dict[str, Any], note: str) -> None:
    """Write the run's note (what it decided) through Airflow's REST API (the ``airflow_api`` connection).

    A note that cannot be written is logged, never a failure: the cycle's record holds the same words.
    """
    from airflow.sdk.exceptions import AirflowNotFoundException

    from retrainer.airflow_api import AirflowApiError
    from retrainer_provider.hooks.airflow_api import AirflowApiHook

    run = context["dag_run"]
    try:
        with AirflowApiHook().get_conn() as client:
            client.set_run_note(run.dag_id, run.run_id, note)
    except AirflowNotFoundException:
        log.warning("no Airflow connection 'airflow_api': the run's note is not set (see .env.example)")
    except (AirflowApiError, ValueError) as error:
        log.warning("the run's note could not be set: %s", error)


def _emit_metrics(metrics: list[Any]) -> None:
    from retrainer_provider.metrics import emit

    emit(metrics)


def _resolve_project(path: str) -> Any:
    """Define ``resolve_project`` inside the DAG being built: read the project file once for the run."""

    @task(retries=3)
    def resolve_project() -> dict[str, Any]:
        """Resolve the project file (environment variables, paths) once; every task of the run uses it."""
        from retrainer.config import ConfigError, snapshot_project

        try:
            snapshot = snapshot_project(path)
        except ConfigError as error:
            raise AirflowFailException(str(error)) from None
        log.info(
            "resolve_project: %s as of now (sha256 %s…), data at %s",
            path,
            snapshot.sha256[:12],
            snapshot.config.data.root_uri,
        )
        return snapshot.to_json()

    return resolve_project()


def _data_steps(snapshot: Any, project: ProjectConfig) -> tuple[Any, Any, Any]:
    """Define ``ingest ─▶ validate ─▶ drift`` inside the DAG being built: both DAGs of a project start so.

    ``validate`` links to its Data Docs page and ``drift`` to its Evidently report (task extra links).

    Returns:
        The three tasks' outputs (XComArgs), for the caller to wire the rest of its DAG.
    """
    pool = pool_name(project)

    @task(retries=3, pool=pool)
    def ingest(snapshot: dict[str, Any]) -> dict[str, Any]:
        """Register newly landed batches and list those awaiting validation."""
        from retrainer import steps

        context = get_current_context()
        alerts = _alerts(context)
        result = steps.ingest(_project(snapshot), _tracking(), _cutoff(context))
        result = result.model_copy(update={"trigger": _trigger(context), "alerts": alerts})
        for alert in alerts:
            log.info("started by %s", alert.summary)
        for landed in _landings(context):
            log.info("started by %s", landed)
        log.info(
            "ingest: %d new batch(es) registered, %d pending up to %s: %s",
            len(result.registered),
            len(result.pending),
            _cutoff(context),
            ", ".join(result.pending) or "none",
        )
        return result.to_json()

    @task(pool=pool, retry_policy=final_rejection())
    def validate(snapshot: dict[str, Any], ingested: dict[str, Any]) -> dict[str, Any]:
        """Great Expectations; fail closed. A rejected batch is final; storage errors are retried."""
        from retrainer import steps
        from retrainer.metrics import quarantine_metrics
        from retrainer_provider.links import DATA_DOCS_XCOM

        project = _project(snapshot)
        found = steps.IngestResult.model_validate(ingested)
        try:
            result = steps.validate(project, found.pending, quarantined_on_arrival=found.quarantined)
        except steps.BatchRejectedError as error:
            _emit_metrics(quarantine_metrics(project.name, len(error.batch_ids)))
            if error.data_docs:  # for the task's Data Docs link (it has no return value)
                get_current_context()["ti"].xcom_push(key=DATA_DOCS_XCOM, value=error.data_docs)
            # The validation's own line above says why (ingest's, for a file it could not read: repeated here);
            # this one says what follows, with no traceback and no retry.
            unread = f" ({error})" if found.quarantined else ""
            outcome = f"quarantined {', '.join(error.batch_ids)}: nothing trained, the champion stays{unread}"
            raise TaskRejected(outcome) from None
        log.info("validate: accepted %s", ", ".join(result.accepted) or "nothing (no new batch)")
        return result.to_json()

    @task
    def drift(snapshot: dict[str, Any], ingested: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
        """Evidently drift of the new batches against the training data of the run's starting champion."""
        from retrainer import steps

        context = get_current_context()
        accepted = steps.ValidationResult.model_validate(validated).accepted
        champion = steps.IngestResult.model_validate(ingested).champion_version
        result = steps.drift(_project(snapshot), _tracking(), accepted, _cycle_id(context), champion)
        log.info("drift: %s", result.summary)
        return result.to_json()

    from retrainer_provider.links import DataDocsLink, DriftReportLink

    ingested = ingest(snapshot)
    validated = validate(snapshot, ingested)
    drifted = drift(snapshot, ingested, validated)
    attach(validated, DataDocsLink, project)
    attach(drifted, DriftReportLink, project)
    return ingested, validated, drifted


def _rule_text(project: ProjectConfig) -> str:
    """The promotion rule in words, for the DAG's documentation."""
    rule = project.promotion
    level = f"{rule.confidence:.0%} interval"
    if rule.rule == "superiority":
        return f"the {level}'s lower bound must be at least a {rule.min_improvement:.1%} improvement"
    return f"promoted unless the {level} allows it to be more than {rule.margin:.1%} worse"


def _failure_callbacks(project: ProjectConfig) -> list[Any]:
    """One e-mail per failed run to the project's ``notifications.on_failure``, if any."""
    notify = project.notifications
    if not notify.on_failure:
        return []
    from retrainer_provider.notifications.run_failed import RunFailedNotifier

    return [
        RunFailedNotifier(to=notify.on_failure, smtp_conn_id=notify.smtp_conn_id, from_email=notify.from_email)
    ]


def _timetable(project: ProjectConfig) -> Any:
    """The project's cron; with an end date, its ticks up to that date, listed (runs by hand stay possible)."""
    import pendulum

    from retrainer.schedule import cron_ticks

    schedule = project.schedule
    if schedule.end_date is None:
        return CronTriggerTimetable(schedule.cron, timezone="UTC")
    ticks = cron_ticks(schedule.cron, schedule.start_date, schedule.end_date, limit=10_000)
    return EventsTimetable(
        [pendulum.instance(tick) for tick in ticks],
        presorted=True,
        description=f"{schedule.cron} (UTC) from {schedule.start_date:%Y-%m-%d} to {schedule.end_date:%Y-%m-%d}",
    )


def build_dag(config_path: Path, project: ProjectConfig) -> DAG:
    """The weekly retraining DAG of one project."""
    path = str(config_path)
    pool = pool_name(project)
    approval = project.promotion.approval == "required"
    timeout = project.promotion.approval_timeout_minutes
    # A run that waits for a reviewer must outlive the review's timeout.
    run_timeout = timedelta(hours=2) + (timedelta(minutes=timeout) if approval else timedelta(0))

    @dag(
        dag_id=f"retrain_{project.name}",
        description=f"Weekly retraining of {project.model_name}: validate, drift, train, evaluate, promote",
        # Weekly, or at once when a drift alert arrives (REST API or the project's alert inbox).
        schedule=AssetOrTimeSchedule(timetable=_timetable(project), assets=drift_alert(project)),
        start_date=project.schedule.start_date,
        # No end_date: Airflow would create no task of a run after it, so the trigger form (a run at "now")
        # did nothing on a project whose schedule has ended. The timetable holds the end instead.
        catchup=project.schedule.catchup,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        dagrun_timeout=run_timeout,
        on_failure_callback=_failure_callbacks(project) or None,
        tags=["retraining", "weekly", project.name, *(["approval"] if approval else [])],
        doc_md=DOC.format(
            model=project.model_name,
            description=project.description,
            cron=project.schedule.cron,
            name=project.name,
            inbox=_inbox(project),
            root=project.data.root_uri,
            suite=project.validation.suite,
            window=project.window.batches,
            backend=project.training.backend.value,
            image=project.training.image,
            holdout=project.holdout.fraction,
            metric=project.metric.name,
            rule=project.promotion.rule,
            rule_text=_rule_text(project),
            pool=pool,
            approval_doc=APPROVAL_DOC.format(timeout=timeout) if approval else "",
        ),
        params={
            "force": Param(False, type="boolean", description="Retrain even when no new batch was accepted."),
            "dry_run": Param(False, type="boolean", description="Evaluate and decide, but register nothing."),
            "window_batches": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Batches in the training window, e.g. 4 (empty: the project's window.batches).",
            ),
            "max_train_rows": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Train on a sample of at most this many rows, e.g. 50000 (empty: every row).",
            ),
            "cutoff": Param(
                None,
                type=["null", "string"],
                description=(
                    "ISO time, e.g. 2013-01-21T03:00:00+00:00: train on the batches whose week ended by then "
                    "(empty: the run's tick, or now for a run started by hand)."
                ),
            ),
        },
        render_template_as_native_obj=True,
    )
    def retrain() -> None:
        @task(retries=3)
        def gate(snapshot: dict[str, Any]) -> dict[str, Any]:
            """Alert-triggered runs: apply the cooldown and record each alert's outcome. Others pass."""
            from retrainer import steps

            context = get_current_context()
            alerts = _alerts(context)
            if not alerts:
                return steps.GateOutcome(decision="not_an_alert", trigger=_trigger(context)).to_json()
            result = steps.gate_alerts(_project(snapshot), alerts, _cycle_id(context))
            for alert in alerts:
                log.info("%s: %s", result.decision, alert.summary)
            if result.decision == "suppressed":
                raise AirflowSkipException(f"retrain suppressed: {result.reason}")
            log.info("gate: %s", result.reason)
            return result.to_json()

        @task
        def plan_training(snapshot: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
            """Decide whether this cycle trains and on which window; the train task runs the plan."""
            from retrainer import steps, training

            context = get_current_context()
            params = context["params"]
            config, tracking = _project(snapshot), _tracking()
            try:
                launch = training.plan(
                    config,
                    tracking,
                    _cutoff(context),
                    _cycle_id(context),
                    trigger=_trigger(context),
                    window_batches=params.get("window_batches"),
                    max_train_rows=params.get("max_train_rows"),
                    # An alert asks for a retrain on the newest data even when no new batch arrived.
                    require_new_data=None
                    if params.get("force") or _alerts(context)
                    else steps.untrained_batches(config, tracking, _cutoff(context), params.get("window_batches")),
                )
            except steps.NothingToTrainError as error:
                raise AirflowSkipException(str(error)) from None
            log.info(
                "plan: train on %s with the %s backend: retrainer %s",
                ", ".join(launch.window),
                config.training.backend.value,
                " ".join(launch.command),
            )
            return launch.to_xcom()

        @task
        def evaluate(snapshot: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
            """Candidate and champion on the same held-out rows."""
            from retrainer import steps

            result = steps.evaluate(_project(snapshot), _tracking(), trained["run_id"])
            champion = (
                "no champion"
                if result.champion is None
                else f"champion v{result.champion_version} {result.champion:.4g}"
            )
            log.info(
                "evaluate: %s candidate %.4g vs %s on %d rows",
                result.metric,
                result.candidate,
                champion,
                result.holdout_rows,
            )
            return result.to_json()

        @task
        def promote(
            snapshot: dict[str, Any], trained: dict[str, Any], evaluation: dict[str, Any]
        ) -> dict[str, Any]:
            """Register the candidate; move @champion only if it wins by the margin."""
            from retrainer import steps

            dry_run = bool(get_current_context()["params"].get("dry_run"))
            result = steps.promote(
                _project(snapshot),
                _tracking(),
                trained["run_id"],
                steps.Evaluation.model_validate(evaluation),
                dry_run=dry_run,
            )
            log.info(
                "promote: %s%s v%s: %s",
                "dry run, " if dry_run else "",
                "challenger (shadow)" if result.challenger else result.verdict.value,
                result.version,
                result.reason,
            )
            return result.to_json()

        @task(retries=3)
        def conclude_approval(
            snapshot: dict[str, Any], decision: dict[str, Any], answer: dict[str, Any]
        ) -> dict[str, Any]:
            """Apply the reviewer's answer: move @champion (compare-and-set) or record the rejection."""
            from retrainer import steps

            result = steps.conclude_approval(
                _project(snapshot), _tracking(), decision["run_id"], steps.Approval.model_validate(answer)
            )
            log.info("conclude_approval: %s v%s: %s", result.verdict.value, result.version, result.reason)
            return result.to_json()

        @task(retries=0)
        def champion_moved(decision: dict[str, Any]) -> str:
            """Shows the outcome in the grid: success when ``@champion`` moved to the candidate, skipped when the
            champion stayed (rejected, dry run, challenger), upstream failed when the cycle stopped earlier."""
            from retrainer import steps

            record = steps.DecisionRecord.model_validate(decision)
            if not record.promoted:
                version = f" v{record.version}" if record.version else ""
                raise AirflowSkipException(f"@champion stays: {record.state}{version}: {record.reason}")
            log.info("@champion moved to v%s", record.version)
            return str(record.version)

        @task(trigger_rule="all_done", retries=3)
        def record() -> dict[str, Any]:
            """Write the cycle's outcome and send its metrics, whatever happened upstream."""
            from retrainer import steps
            from retrainer.config import ProjectSnapshot
            from retrainer.metrics import cycle_metrics
            from retrainer.run_notes import cycle_note
            from retrainer.steps.gating import outcome_of as gate_outcome_of
            from retrainer_provider.hooks.airflow_api import ui_links

            context = get_current_context()
            ti = context["ti"]
            raw_snapshot = ti.xcom_pull(task_ids="resolve_project")
            if raw_snapshot is None:
                raise AirflowFailException("resolve_project failed: the project file could not be read")
            snapshot = ProjectSnapshot.model_validate(raw_snapshot)
            pulled = {field: ti.xcom_pull(task_ids=task_id) for task_id, field in STEP_TASKS.items()}
            if approval and (concluded := ti.xcom_pull(task_ids=CONCLUDE_TASK)) is not None:
                pulled["decision"] = concluded
            alerts = _alerts(context)
            parts = steps.CycleParts.model_validate(
                {
                    **{k: v for k, v in pulled.items() if v is not None},
                    "planned": ti.xcom_pull(task_ids="plan_training") is not None,
                }
            )
            if parts.gate is None and alerts:  # a suppressed gate skipped its task: read what it recorded
                parts = parts.model_copy(update={"gate": gate_outcome_of(snapshot.config, _cycle_id(context))})
            forced = bool(context["params"].get("force")) or bool(alerts)
            outcome = steps.record_cycle(
                snapshot.config,
                _cycle_id(context),
                parts,
                trigger=_trigger(context),
                cutoff=_cutoff(context),
                alerts=alerts,
                error=steps.error_of(parts, forced),
                started_at=context["dag_run"].start_date,
                project_sha256=snapshot.sha256,
                dag_id=context["dag_run"].dag_id,
                airflow_run_id=context["dag_run"].run_id,
            )
            _emit_metrics(cycle_metrics(snapshot.config.name, outcome))
            note = cycle_note(outcome, ui_links(), snapshot.config.name)
            log.info("record: cycle %s: %s", outcome.cycle_id, note.splitlines()[0])
            _set_note(context, note)
            return {"cycle_id": outcome.cycle_id, "outcome": outcome.outcome}

        @task(trigger_rule="one_failed", retries=0)
        def watcher() -> None:
            """Fails the run when any step failed (``record`` always succeeds, so it cannot tell)."""
            raise AirflowFailException("a step of this cycle failed: see the failed task's log")

        snapshot = _resolve_project(path)
        gated = gate(snapshot)
        ingested, validated, drifted = _data_steps(snapshot, project)
        gated >> ingested
        planned = plan_training(snapshot, validated)
        trained = trainer_operator(project, planned, doc_md=TRAIN_DOC)
        evaluation = evaluate(snapshot, trained.output)
        decided = promote(snapshot, trained.output, evaluation)
        attach(decided, ModelVersionLink, project)
        steps_run = [snapshot, gated, ingested, validated, drifted, planned, trained, evaluation, decided]
        if approval:
            from retrainer_provider.operators.approval import PromotionApprovalOperator

            answer = PromotionApprovalOperator(task_id="approve", project=project, doc_md=APPROVE_DOC)
            decided >> answer
            concluded = conclude_approval(snapshot, decided, answer.output)
            attach(concluded, ModelVersionLink, project)
            steps_run += [answer, concluded]
            [drifted, concluded] >> record()
            champion_moved(concluded)
        else:
            [drifted, decided] >> record()
            champion_moved(decided)
        steps_run >> watcher()

    return retrain()


def _inbox(project: ProjectConfig) -> str:
    from retrainer.alerts import inbox_uri

    return inbox_uri(project.data.root_uri)


MONITOR_DOC = """
### Drift monitor of `{model}`

Runs whenever new batch files land in `{landing}` or late labels in `{labels}` (asset watchers on both
zones, no polling task holds a worker slot).

- **Data drift**: registers and validates the new batches (a failing batch is quarantined, as in the weekly
  cycle) and compares them with the champion's training data (Evidently). The rule fires when at least
  {share:.0%} of the columns drifted or a key feature did ({keys}).
- **Concept drift**: attaches late labels (`labels/<batch>.parquet`) to their batches and scores the champion
  on the newly labelled rows. The rule fires when its {metric} is more than {degradation:.0%} worse than its
  held-out score when it was chosen.
{shadow_doc}
When a rule fires, `raise_alert` emits an event on `drift_alert_{name}` carrying the alerts (kind, batches,
summary, report), which starts `retrain_{name}`; otherwise it is skipped and says why. The data steps share
the pool `{pool}` with the weekly cycle.
"""


SHADOW_DOC = """- **Shadow** (`promotion.mode: shadow`): scores `@challenger` beside `@champion` on the newly
  labelled batches neither trained on; {wins} won batches make it champion, {max_losses} lost ones (or
  {max_batches} batches short of its wins) retire it. Every move is in the alias history.
"""


def build_monitor_dag(config_path: Path, project: ProjectConfig) -> DAG:
    """The drift monitor DAG of one project, scheduled on its landing and labels zones."""
    path = str(config_path)
    pool = pool_name(project)
    alert_asset = drift_alert(project)

    @dag(
        dag_id=f"monitor_{project.name}",
        description=f"Data and concept drift of new {project.name} batches and labels; raise a drift alert",
        schedule=batches_landed(project) | labels_arrived(project),
        start_date=project.schedule.start_date,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        dagrun_timeout=timedelta(minutes=30),
        on_failure_callback=_failure_callbacks(project) or None,
        tags=["retraining", "drift-monitor", project.name],
        doc_md=MONITOR_DOC.format(
            model=project.model_name,
            name=project.name,
            landing=f"{project.data.root_uri}/landing",
            labels=f"{project.data.root_uri}/labels",
            share=project.drift.share_threshold,
            keys=", ".join(project.drift.key_features) or "none",
            metric=project.metric.name,
            degradation=project.concept_drift.max_degradation,
            pool=pool,
            shadow_doc=SHADOW_DOC.format(**dict(project.promotion.shadow))
            if project.promotion.mode == "shadow"
            else "",
        ),
    )
    def monitor() -> None:
        @task(retries=3, pool=pool)
        def concept(snapshot: dict[str, Any]) -> dict[str, Any]:
            """Attach late labels to their (validated) batches; judge the champion on them."""
            from retrainer import steps

            result = steps.concept_drift(_project(snapshot), _tracking())
            log.info("concept drift: %s", result.summary)
            return result.to_json()

        @task(outlets=[alert_asset])
        def raise_alert(
            snapshot: dict[str, Any], validated: dict[str, Any], drifted: dict[str, Any], judged: dict[str, Any]
        ) -> dict[str, Any]:
            """Emit one drift-alert event carrying the alerts whose rule fired (data and/or concept drift)."""
            from retrainer import steps
            from retrainer.alerts import alert_from_concept, alert_from_drift
            from retrainer.metrics import monitor_metrics

            data = steps.DriftOutcome.model_validate(drifted)
            labels = steps.ConceptDriftResult.model_validate(judged)
            accepted = steps.ValidationResult.model_validate(validated).accepted
            raised = [a for a in (alert_from_drift(data, accepted), alert_from_concept(labels)) if a is not None]
            _emit_metrics(
                monitor_metrics(
                    _project(snapshot).name, alerts_raised=len(raised), share_drifted=data.share_drifted
                )
            )
            context = get_current_context()
            if not raised:
                _set_note(context, f"no alert\n\n- data drift: {data.summary}\n- concept drift: {labels.summary}")
                raise AirflowSkipException(f"no alert: {data.summary}; {labels.summary}")
            payload = {"alerts": [alert.model_dump(mode="json") for alert in raised], "via": "drift-monitor"}
            context["outlet_events"][alert_asset].extra = payload
            for alert in raised:
                log.info("raised %s", alert.describe())
            lines = [f"- {alert.describe()}" for alert in raised]
            _set_note(context, "\n".join([f"drift alert raised: retrain_{project.name} starts", "", *lines]))
            return payload

        @task(retries=3, pool=pool)
        def shadow(snapshot: dict[str, Any]) -> dict[str, Any]:
            """Judge @challenger beside @champion on the newly labelled batches; promote or retire it."""
            from retrainer import steps

            result = steps.shadow_evaluation(_project(snapshot), _tracking())
            log.info("shadow: %s", result.summary)
            return result.to_json()

        snapshot = _resolve_project(path)
        _, validated, drifted = _data_steps(snapshot, project)
        judged = concept(snapshot)
        validated >> judged  # labels attach to validated batches only
        raise_alert(snapshot, validated, drifted, judged)
        if project.promotion.mode == "shadow":
            judged >> shadow(snapshot)  # after the labels attached

    return monitor()


ROLLBACK_DOC = """
### Roll back `{model}`

Trigger this DAG by hand to move `@champion` back: to **to_version**, or (left empty) to the champion the
current one replaced. The **reason** is required; it is recorded on both versions and in the model's alias
history with who triggered the run (`retrainer history -c <project file>` prints the history). A rollback
waits for a promotion that holds the alias, and the next weekly cycle compares its candidates with the
restored champion.
"""


def build_rollback_dag(config_path: Path, project: ProjectConfig) -> DAG:
    """The manual rollback DAG of one project."""
    path = str(config_path)

    @dag(
        dag_id=f"rollback_{project.name}",
        description=f"Move @champion of {project.model_name} back to an earlier version (manual)",
        schedule=None,
        start_date=project.schedule.start_date,
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "retries": 0},
        dagrun_timeout=timedelta(minutes=15),
        tags=["retraining", "rollback", project.name],
        doc_md=ROLLBACK_DOC.format(model=project.model_name),
        params={
            "to_version": Param(
                None,
                type=["null", "string"],
                pattern=r"^[0-9]+$",
                description="Version to restore, e.g. 7 (empty: the champion the current one replaced).",
            ),
            "reason": Param(  # no default: the trigger form asks for it
                type="string",
                minLength=3,
                description="Why, e.g. 'complaints about late-evening predictions since v9'.",
            ),
        },
    )
    def rollback() -> None:
        @task
        def move_champion_back(snapshot: dict[str, Any]) -> dict[str, Any]:
            """Move ``@champion`` back under the project's alias lease; record who and why."""
            from retrainer import steps
            from retrainer.run_notes import rollback_note
            from retrainer_provider.hooks.airflow_api import ui_links

            context = get_current_context()
            params, run = context["params"], context["dag_run"]
            who = getattr(run, "triggering_user_name", None) or "airflow"
            try:
                result = steps.rollback(
                    _project(snapshot),
                    _tracking(),
                    params.get("to_version") or None,
                    params["reason"],
                    by=f"{who} (Airflow run {run.run_id})",
                )
            except RuntimeError as error:  # nothing to roll back to, or no such version: retrying cannot help
                raise AirflowFailException(str(error)) from None
            log.info(
                "rolled back %s from v%s to v%s: %s",
                result.model,
                result.from_version,
                result.to_version,
                result.reason,
            )
            _set_note(context, rollback_note(result, ui_links()))
            return result.to_json()

        move_champion_back(_resolve_project(path))

    return rollback()


def _invalid_project_dag(config_path: Path, error: Exception) -> DAG:
    """A placeholder that shows an invalid project file in the Airflow UI without hiding the valid ones."""

    @dag(
        dag_id=f"retrain_{config_path.stem}__invalid_config",
        schedule=None,
        tags=["retraining", "invalid-config"],
        doc_md=f"### Invalid project file `{config_path.name}`\n\n```\n{error}\n```\nFix the file; "
        "`retrainer check-config -c <file>` checks it.",
        default_args=DEFAULT_ARGS,
        max_active_runs=1,
        dagrun_timeout=timedelta(minutes=5),
    )
    def invalid_project() -> None:
        @task(retries=0)
        def explain() -> None:
            raise AirflowFailException(str(error))

        explain()

    return invalid_project()


def _load_projects(folder: Path) -> None:
    """Two DAGs per project file; an invalid file becomes a visible placeholder DAG naming the problem."""
    scan = scan_projects(folder)
    for config_path, error in scan.invalid:
        log.error("%s", error)
        globals()[f"invalid_{config_path.stem}"] = _invalid_project_dag(config_path, error)
    for config_path, project in scan.valid:
        globals()[f"retrain_{project.name}"] = build_dag(config_path, project)
        globals()[f"monitor_{project.name}"] = build_monitor_dag(config_path, project)
        globals()[f"rollback_{project.name}"] = build_rollback_dag(config_path, project)


_load_projects(PROJECTS_DIR)
