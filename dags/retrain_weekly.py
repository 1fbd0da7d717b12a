"""Retraining DAGs, two per project file in ``projects/`` (or ``RETRAINER_PROJECTS_DIR``).

- ``retrain_<project>``: the retraining cycle, weekly or on a drift alert.
- ``monitor_<project>``: when batches or late labels land, validate the batches and measure data drift, judge
  the champion on the late labels (concept drift); raise a drift alert if a rule fires, which starts
  ``retrain_<project>`` within seconds.

This file only wires steps. The work is done by ``retrainer.steps``; tasks hand each other batch ids, run ids
and small summaries through XCom, never data. Heavy libraries are imported inside the tasks, at run time.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, AssetOrTimeSchedule, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.timetables.trigger import CronTriggerTimetable

from retrainer.config import ConfigError, ProjectConfig, load_config
from retrainer_provider.assets import batches_landed, drift_alert, labels_arrived
from retrainer_provider.operators import trainer_operator

log = logging.getLogger(__name__)

PROJECTS_DIR = Path(os.environ.get("RETRAINER_PROJECTS_DIR", Path(__file__).resolve().parents[1] / "projects"))

DOC = """
### Weekly retraining of `{model}`

{description}

Runs start on the weekly cron (`{cron}` UTC), on a **drift alert** (an event on the asset
`drift_alert_{name}`: posted through the REST API, or a JSON file dropped into `{inbox}`), or by hand.
The run's type says which (`scheduled`, `asset_triggered`, `manual`), and its first task logs the alert.
An alert forces a retrain on the newest window even when no new batch arrived.

Every run processes the batches whose period ended by its cutoff (the cron tick, or the `cutoff` param):

1. **ingest** registers batches that landed in `{root}/landing` (content hash, rows, period).
2. **validate** checks each new batch against the Great Expectations suite `{suite}`. A failing batch is
   moved to `quarantine/` with its report and the run stops here: nothing is trained, the champion is untouched.
3. **drift** compares the new batches with the champion's training data (Evidently; report in MLflow).
4. **plan_training** decides whether the cycle trains (new data, an alert or `force`) and on which window;
   **train** runs `retrainer train` on the `{backend}` backend (a subprocess, a container of `{image}`, or a
   Kubernetes pod): a candidate on the newest {window} accepted batches, holding out the newest
   {holdout:.0%} of rows. Only its MLflow run id comes back.
5. **evaluate** scores candidate and champion on the same held-out rows ({metric}).
6. **promote** registers the candidate; `@champion` moves to it only if it is at least
   {margin:.1%} better. The decision and its reason are tags on the model version.
7. **record** writes the cycle's outcome (`retrainer report` prints them all as a table).

Params for manual runs: `force` (retrain without new data), `dry_run` (decide, register nothing),
`window_batches`, `max_train_rows`, `cutoff` (ISO time; default: the run's data interval end or now).
"""

TRAIN_DOC = """Runs the planned `retrainer train` command on the project's `training.backend`. A failure shows the
trainer's exit code (137: killed for memory) and its last log lines; no model version is registered."""

# The cycle's steps whose results `record` collects.
STEP_TASKS = ("gate", "ingest", "validate", "drift", "plan_training", "train", "evaluate", "promote")

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


def _alerts(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The alerts whose asset events started this run (none for scheduled and manual runs)."""
    from retrainer.alerts import alerts_from_events

    events = context.get("triggering_asset_events") or {}
    return alerts_from_events([dict(event.extra or {}) for batch in events.values() for event in batch])


def _cycle_id(context: dict[str, Any]) -> str:
    from retrainer.steps import safe_id

    return safe_id(context["dag_run"].run_id)


def _inbox(project: ProjectConfig) -> str:
    from retrainer.alerts import inbox_uri

    return inbox_uri(project.data.root_uri)


def _mlflow() -> None:
    from retrainer_provider.hooks.mlflow import MlflowHook

    MlflowHook().configure()


def _data_steps(path: str) -> tuple[Any, Any, Any]:
    """Define ``ingest ─▶ validate ─▶ drift`` inside the DAG being built: both DAGs of a project start so.

    Returns:
        The three tasks' outputs (XComArgs), for the caller to wire the rest of its DAG.
    """

    @task(retries=3)
    def ingest() -> dict[str, Any]:
        """Register newly landed batches and list those awaiting validation."""
        from retrainer import steps

        context = get_current_context()
        result = steps.ingest(load_config(path), _cutoff(context))
        result["trigger"] = _trigger(context)
        result["alerts"] = _alerts(context)
        for alert in result["alerts"]:
            log.info("started by %s", alert["summary"])
        log.info(
            "ingest: %d new batch(es) registered, %d pending up to %s: %s",
            len(result["registered"]),
            len(result["pending"]),
            _cutoff(context),
            ", ".join(result["pending"]) or "none",
        )
        return result

    @task
    def validate(ingested: dict[str, Any]) -> dict[str, Any]:
        """Great Expectations; fail closed. A rejected batch is final; storage errors are retried."""
        from retrainer import steps

        try:
            result = steps.validate(
                load_config(path), ingested["pending"], quarantined_on_arrival=ingested["quarantined"]
            )
        except steps.BatchRejectedError as error:
            raise AirflowFailException(str(error)) from None
        log.info("validate: accepted %s", ", ".join(result["accepted"]) or "nothing (no new batch)")
        return result

    @task
    def drift(ingested: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
        """Evidently drift of the new batches against the training data of the run's starting champion."""
        from retrainer import steps

        _mlflow()
        context = get_current_context()
        result = steps.drift(
            load_config(path), validated["accepted"], _cycle_id(context), ingested["champion_version"]
        )
        log.info("drift: %s", result["summary"])
        return result

    ingested = ingest()
    validated = validate(ingested)
    return ingested, validated, drift(ingested, validated)


def build_dag(config_path: Path, project: ProjectConfig) -> DAG:
    """The weekly retraining DAG of one project."""
    path = str(config_path)

    @dag(
        dag_id=f"retrain_{project.name}",
        description=f"Weekly retraining of {project.model_name}: validate, drift, train, evaluate, promote",
        # Weekly, or at once when a drift alert arrives (REST API or the project's alert inbox).
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(project.schedule.cron, timezone="UTC"), assets=drift_alert(project)
        ),
        start_date=project.schedule.start_date,
        end_date=project.schedule.end_date,
        catchup=project.schedule.catchup,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        dagrun_timeout=timedelta(hours=2),
        tags=["retraining", "weekly", project.name],
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
            margin=project.promotion.min_improvement,
        ),
        params={
            "force": Param(False, type="boolean", description="Retrain even when no new batch was accepted."),
            "dry_run": Param(False, type="boolean", description="Evaluate and decide, but register nothing."),
            "window_batches": Param(
                None, type=["null", "integer"], minimum=1, description="Override window.batches for this run."
            ),
            "max_train_rows": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Train on a sample of at most this many rows.",
            ),
            "cutoff": Param(
                None,
                type=["null", "string"],
                description="ISO time: only batches ended by then (default: interval end).",
            ),
        },
        render_template_as_native_obj=True,
    )
    def retrain() -> None:
        @task(retries=3)
        def gate() -> dict[str, Any]:
            """Alert-triggered runs: apply the cooldown and record each alert's outcome. Others pass."""
            from retrainer import steps

            context = get_current_context()
            alerts = _alerts(context)
            if not alerts:
                return {"decision": "not_an_alert", "trigger": _trigger(context)}
            result = steps.gate_alerts(load_config(path), alerts, _cycle_id(context))
            for alert in alerts:
                log.info("%s: %s", result["decision"], alert["summary"])
            if result["decision"] == "suppressed":
                raise AirflowSkipException(f"retrain suppressed: {result['reason']}")
            log.info("gate: %s", result["reason"])
            return result

        @task
        def plan_training(validated: dict[str, Any]) -> dict[str, Any]:
            """Decide whether this cycle trains and on which window; the train task runs the plan."""
            from retrainer import steps, training

            _mlflow()
            context = get_current_context()
            params = context["params"]
            config = load_config(path)
            try:
                launch = training.plan(
                    config,
                    _cutoff(context),
                    _cycle_id(context),
                    trigger=_trigger(context),
                    window_batches=params.get("window_batches"),
                    max_train_rows=params.get("max_train_rows"),
                    # An alert asks for a retrain on the newest data even when no new batch arrived.
                    require_new_data=None
                    if params.get("force") or _alerts(context)
                    else steps.untrained_batches(config, _cutoff(context), params.get("window_batches")),
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
        def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
            """Candidate and champion on the same held-out rows."""
            from retrainer import steps

            _mlflow()
            result = steps.evaluate(load_config(path), trained["run_id"])
            champion = (
                "no champion"
                if result["champion"] is None
                else f"champion v{result['champion_version']} {result['champion']:.4g}"
            )
            log.info(
                "evaluate: %s candidate %.4g vs %s on %d rows",
                result["metric"],
                result["candidate"],
                champion,
                result["holdout_rows"],
            )
            return result

        @task
        def promote(trained: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
            """Register the candidate; move @champion only if it wins by the margin."""
            from retrainer import steps

            _mlflow()
            dry_run = bool(get_current_context()["params"].get("dry_run"))
            result = steps.promote(load_config(path), trained["run_id"], evaluation, dry_run=dry_run)
            log.info(
                "promote: %s%s v%s: %s",
                "dry run, " if dry_run else "",
                result["verdict"],
                result["version"],
                result["reason"],
            )
            return result

        @task(trigger_rule="all_done", retries=3)
        def record() -> dict[str, Any]:
            """Write the cycle's outcome, whatever happened upstream."""
            from retrainer import steps

            context = get_current_context()
            ti = context["ti"]
            parts = {name: ti.xcom_pull(task_ids=name) for name in STEP_TASKS}
            outcome = steps.record_cycle(
                load_config(path),
                _cycle_id(context),
                trigger=_trigger(context),
                alerts=_alerts(context),
                gate=_gate_outcome(path, parts["gate"], context),
                cutoff=_cutoff(context),
                ingest=parts["ingest"],
                validation=parts["validate"],
                drift=parts["drift"],
                training=parts["train"],
                evaluation=parts["evaluate"],
                decision=parts["promote"],
                error=_error_of(parts, bool(context["params"].get("force")) or bool(_alerts(context))),
            )
            log.info(
                "record: cycle %s: %s",
                outcome["cycle_id"],
                outcome.get("error") or (parts["promote"] or {}).get("reason", "no decision"),
            )
            return {"cycle_id": outcome["cycle_id"]}

        @task(trigger_rule="one_failed", retries=0)
        def watcher() -> None:
            """Fails the run when any step failed (``record`` always succeeds, so it cannot tell)."""
            raise AirflowFailException("a step of this cycle failed: see the failed task's log")

        gated = gate()
        ingested, validated, drifted = _data_steps(path)
        gated >> ingested
        planned = plan_training(validated)
        trained = trainer_operator(project, planned, doc_md=TRAIN_DOC)
        evaluation = evaluate(trained.output)
        decided = promote(trained.output, evaluation)
        [drifted, decided] >> record()
        [gated, ingested, validated, drifted, planned, trained, evaluation, decided] >> watcher()

    return retrain()


def _gate_outcome(path: str, gate: dict[str, Any] | None, context: dict[str, Any]) -> dict[str, Any] | None:
    """The gate's result; a suppressed gate returned nothing (it skipped), so its recorded outcome is read."""
    if gate is not None or not _alerts(context):
        return gate
    from retrainer import storage
    from retrainer.catalog import Catalog

    uri = storage.join(Catalog(load_config(path)).reports, "alerts", f"{_cycle_id(context)}.json")
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def _error_of(parts: dict[str, Any], force: bool) -> str | None:
    """Why a cycle ended without a decision, read from which steps returned a result (see the task logs)."""
    if (parts.get("gate") or {}).get("decision") == "suppressed":
        return None
    if parts["ingest"] is None:
        return "ingest failed"
    if parts["validate"] is None:
        return "validation failed: a batch was quarantined or could not be validated, nothing trained"
    if parts["train"] is None:
        if parts.get("plan_training") is None and not force:
            return "no new accepted batch (or planning failed: see the plan_training task)"
        return "training failed: see the train task's log"
    for name in ("evaluate", "promote"):
        if parts[name] is None:
            return f"{name} failed"
    return None


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

When a rule fires, `raise_alert` emits an event on `drift_alert_{name}` carrying the alerts (kind, batches,
summary, report), which starts `retrain_{name}`; otherwise it is skipped and says why.
"""


def build_monitor_dag(config_path: Path, project: ProjectConfig) -> DAG:
    """The drift monitor DAG of one project, scheduled on its landing and labels zones."""
    path = str(config_path)
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
        ),
    )
    def monitor() -> None:
        @task(retries=3)
        def concept() -> dict[str, Any]:
            """Attach late labels to their (validated) batches; judge the champion on them."""
            from retrainer import steps

            _mlflow()
            result = steps.concept_drift(load_config(path))
            log.info("concept drift: %s", result["summary"])
            return result

        @task(outlets=[alert_asset])
        def raise_alert(
            validated: dict[str, Any], drifted: dict[str, Any], judged: dict[str, Any]
        ) -> dict[str, Any]:
            """Emit one drift-alert event carrying the alerts whose rule fired (data and/or concept drift)."""
            from retrainer.alerts import alert_from_concept, alert_from_drift

            raised = [
                alert
                for alert in (alert_from_drift(drifted, validated["accepted"]), alert_from_concept(judged))
                if alert is not None
            ]
            if not raised:
                raise AirflowSkipException(f"no alert: {drifted['summary']}; {judged['summary']}")
            payload = {"alerts": [alert.model_dump(mode="json") for alert in raised], "via": "drift-monitor"}
            get_current_context()["outlet_events"][alert_asset].extra = payload
            for alert in raised:
                log.info("raised %s", alert.describe())
            return payload

        _, validated, drifted = _data_steps(path)
        judged = concept()
        validated >> judged  # labels attach to validated batches only
        raise_alert(validated, drifted, judged)

    return monitor()


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
    """One DAG per project file; an invalid file becomes a visible placeholder DAG naming the problem."""
    seen: dict[str, Path] = {}
    for config_path in sorted(folder.glob("*.yaml")):
        try:
            project = load_config(config_path)
            if project.name in seen:
                raise ConfigError(f"{config_path}: name {project.name!r} is already used by {seen[project.name]}")
        except ConfigError as error:
            log.error("%s", error)
            globals()[f"invalid_{config_path.stem}"] = _invalid_project_dag(config_path, error)
            continue
        seen[project.name] = config_path
        globals()[f"retrain_{project.name}"] = build_dag(config_path, project)
        globals()[f"monitor_{project.name}"] = build_monitor_dag(config_path, project)


_load_projects(PROJECTS_DIR)
