"""Shadow: score ``@challenger`` beside ``@champion`` on newly labelled batches; promote it after enough wins.

With ``promotion.mode: shadow`` a candidate the gate promotes becomes ``@challenger`` (:func:`~retrainer.steps.
registry.promote`). This step, run by the drift monitor whenever batches or late labels arrive (and by
``retrainer shadow``), judges it on the labelled rows that neither model trained on: accepted batches newer
than the challenger's training cutoff, and late labels of its window's batches that arrived after it trained.
Each batch is judged once, by the paired bootstrap of the primary metric on its rows
(:func:`retrainer.shadow.judge`). Once the challenger has won ``promotion.shadow.wins`` batches it becomes
champion (compare-and-set under the alias lease, like any promotion); after ``max_losses`` losses, or
``max_batches`` batches short of its wins, it is retired. Both are alias moves in the history, recorded on the
version, the challenger's run (decision, model card) and its cycle.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from retrainer import locks
from retrainer.catalog import Catalog
from retrainer.promotion import Verdict
from retrainer.shadow import TALLY_ARTIFACT, ShadowJudgement, ShadowTally, judge
from retrainer.steps.common import (
    CHALLENGER,
    CHAMPION,
    TAG,
    StepResult,
    alias_version,
    champion_version,
    load_model,
    parse_cutoff,
    window_of_run,
)
from retrainer.steps.records import amend_cycle_decision
from retrainer.steps.registry import (
    DecisionRecord,
    champion_lock,
    log_decision,
    log_version_url,
    move_alias,
    write_tally,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)

Action = Literal["promoted", "retired", "continuing", "none"]


class ShadowOutcome(StepResult):
    """What this look at the challenger found and did.

    Attributes:
        challenger_version: The ``@challenger`` judged (None: there is none).
        champion_version: The champion it was judged against.
        judgements: The batches judged this time, oldest first.
        tally: Its whole tally against this champion, after them.
        action: ``promoted`` (it became champion), ``retired`` (its alias removed), ``continuing`` or ``none``
            (nothing to judge against).
        summary: One line for logs.
    """

    challenger_version: str | None = None
    champion_version: str | None = None
    judgements: list[ShadowJudgement] = Field(default_factory=list)
    tally: ShadowTally | None = None
    action: Action = "none"
    summary: str


def shadow_evaluation(config: ProjectConfig, tracking: Tracking, *, lock_wait_s: float = 300.0) -> ShadowOutcome:
    """Judge ``@challenger`` against ``@champion`` on the newly labelled batches neither trained on; promote or
    retire it when its tally says so.

    The models are scored outside the alias lease; the tally is merged, and the aliases moved, under it, after
    checking both aliases still point where they pointed when the batches were judged.

    Raises:
        LockTimeout: Another promotion or rollback of the project held the alias for longer than
            ``lock_wait_s``.
    """
    rule = config.promotion.shadow
    with tracking.active():
        client = tracking.client()
        challenger = alias_version(client, config, CHALLENGER)
        champion = champion_version(client, config)
        if challenger is None:
            return ShadowOutcome(champion_version=_v(champion), summary=f"{config.model_name} has no @challenger")
        if champion is None:
            return ShadowOutcome(
                challenger_version=str(challenger.version),
                summary=f"@challenger v{challenger.version} has no @champion to be judged against",
            )
        tally = _tally(client, challenger, champion)
        judgements = _judge_new_batches(
            config, client, challenger, champion, {j.batch_id for j in tally.judgements}
        )
        owner = locks.default_owner(f"shadow of v{challenger.version}")
        with locks.held(champion_lock(config), owner, wait_s=lock_wait_s):
            now_challenger, now_champion = (
                alias_version(client, config, CHALLENGER),
                champion_version(client, config),
            )
            if _v(now_challenger) != str(challenger.version) or _v(now_champion) != str(champion.version):
                return ShadowOutcome(
                    challenger_version=_v(now_challenger),
                    champion_version=_v(now_champion),
                    summary=f"the aliases moved while v{challenger.version} was judged against "
                    f"v{champion.version}: judged again next time",
                )
            tally = _tally(client, challenger, champion)  # another monitor run may have judged meanwhile
            known = {j.batch_id for j in tally.judgements}
            fresh = [j for j in judgements if j.batch_id not in known]
            tally = tally.model_copy(update={"judgements": [*tally.judgements, *fresh]})
            if fresh:
                write_tally(client, config, challenger.run_id, tally)
            standing = tally.standing(rule)
            action: Action = "continuing"
            if standing == "promote":
                _conclude(config, tracking, client, challenger, champion, tally, owner, promoted=True)
                action = "promoted"
            elif standing == "retire":
                _conclude(config, tracking, client, challenger, champion, tally, owner, promoted=False)
                action = "retired"
    summary = f"{action}: {tally.text(rule)}" + "".join(f"; {j.note}" for j in fresh)
    log.info("shadow: %s", summary)
    return ShadowOutcome(
        challenger_version=str(challenger.version),
        champion_version=str(champion.version),
        judgements=fresh,
        tally=tally,
        action=action,
        summary=summary,
    )


def _v(version: ModelVersion | None) -> str | None:
    return None if version is None else str(version.version)


def read_tally(run_id: str) -> ShadowTally | None:
    """The tally recorded on a challenger's run (None: none yet). Needs an active tracking server."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return ShadowTally.model_validate(mlflow.artifacts.load_dict(f"runs:/{run_id}/{TALLY_ARTIFACT}"))
    except (MlflowException, OSError):
        return None


def _tally(client: MlflowClient, challenger: ModelVersion, champion: ModelVersion) -> ShadowTally:
    """The challenger's tally against this champion: a new one when it was judged against another (a rollback
    or a manual move of ``@champion`` starts the count again)."""
    recorded = read_tally(challenger.run_id)
    if recorded is not None and recorded.champion_version == str(champion.version):
        return recorded
    return ShadowTally(
        challenger_version=str(challenger.version),
        champion_version=str(champion.version),
        since=datetime.now(UTC).replace(microsecond=0),
    )


def _judge_new_batches(
    config: ProjectConfig,
    client: MlflowClient,
    challenger: ModelVersion,
    champion: ModelVersion,
    judged: set[str],
) -> list[ShadowJudgement]:
    """Each batch with labelled rows neither model trained on, not judged yet: the challenger beside the
    champion on them."""
    evidence = _evidence(config, client, challenger, champion, judged)
    rule = config.promotion
    if not any(len(rows) >= rule.shadow.min_rows for _, rows in evidence):  # nothing to score: no model loaded
        return [judge(batch_id, len(rows), None, rule.shadow.min_rows) for batch_id, rows in evidence]
    from retrainer import modeling
    from retrainer.comparison import compare

    models = {
        name: load_model(client, config, f"models:/{config.model_name}/{version.version}")
        for name, version in (("challenger", challenger), ("champion", champion))
    }
    judgements = []
    for batch_id, rows in evidence:
        comparison = None
        if len(rows) >= rule.shadow.min_rows:
            features, target = modeling.prepare(rows, config)
            predictions = {n: modeling.predict_for_metric(m, features, config.task) for n, m in models.items()}
            try:
                comparison = compare(
                    {config.metric.name: config.metric.greater_is_better},
                    config.task.value,
                    target.to_numpy(),
                    predictions["challenger"],
                    predictions["champion"],
                    resamples=rule.resamples,
                    confidence=rule.confidence,
                    seed=rule.seed,
                )[config.metric.name]
            except ValueError as error:  # e.g. roc_auc on rows of one class
                log.warning("shadow: batch %s cannot be judged: %s", batch_id, error)
        judgements.append(judge(batch_id, len(rows), comparison, rule.shadow.min_rows))
    return judgements


def _evidence(
    config: ProjectConfig,
    client: MlflowClient,
    challenger: ModelVersion,
    champion: ModelVersion,
    judged: set[str],
) -> list[tuple[str, pd.DataFrame]]:
    """``(batch id, labelled rows)`` that neither model trained on, oldest first: accepted batches whose period
    ended after the challenger's training cutoff (their labelled rows), and batches of either window whose late
    labels arrived after both models trained (the late-labelled rows). Batches without labelled rows yet wait."""
    catalog = Catalog(config)
    target = config.schema_.target
    runs = [client.get_run(challenger.run_id), client.get_run(champion.run_id)]
    cutoff = parse_cutoff(runs[0].data.tags[f"{TAG}cutoff"])
    trained_by = max(datetime.fromtimestamp(run.info.start_time / 1000, UTC) for run in runs)
    windows = {batch for run in runs for batch in window_of_run(client, run.info.run_id)}
    found: list[tuple[str, pd.DataFrame]] = []
    for record in catalog.accepted_after(cutoff):
        if record.batch_id in judged or record.batch_id in windows:
            continue
        frame = catalog.load([record])
        rows = frame.loc[frame[target].notna()].reset_index(drop=True)
        if len(rows):
            found.append((record.batch_id, rows))
    for batch_id in sorted(windows - judged):
        record = catalog.get(batch_id)
        if record.labels is not None and parse_cutoff(record.labels["registered_at"]) > trained_by:
            rows = catalog.late_labelled_rows(record)
            if len(rows):
                found.append((batch_id, rows))
    return found


def _conclude(
    config: ProjectConfig,
    tracking: Tracking,
    client: MlflowClient,
    challenger: ModelVersion,
    champion: ModelVersion,
    tally: ShadowTally,
    owner: str,
    *,
    promoted: bool,
) -> None:
    """End the challenger's shadow: make it champion or retire it, recorded like any decision."""
    import mlflow

    rule = config.promotion.shadow
    version, run_id = str(challenger.version), challenger.run_id
    cycle_id = client.get_run(run_id).data.tags.get(f"{TAG}cycle_id")
    evidence = "; ".join(j.note for j in tally.judgements if j.outcome != "not judged")
    if promoted:
        reason = f"won its shadow: {tally.text(rule)}: {evidence}"
        move_alias(
            client,
            config,
            CHAMPION,
            str(champion.version),
            version,
            run_id,
            cycle_id,
            owner,
            reason,
            action="shadow_promotion",
        )
    else:
        reason = f"retired from shadow: {tally.text(rule)}: {evidence}"
    move_alias(
        client,
        config,
        CHALLENGER,
        version,
        None,
        run_id,
        cycle_id,
        owner,
        reason,
        action="shadow_promotion" if promoted else "retirement",
    )
    from mlflow.exceptions import MlflowException

    tags = {
        f"{TAG}decision": "promoted" if promoted else "rejected",
        f"{TAG}reason": reason[:5000],
        f"{TAG}shadow_outcome": "won" if promoted else "retired",
    }
    try:
        recorded = DecisionRecord.model_validate(
            mlflow.artifacts.load_dict(f"runs:/{run_id}/decision/decision.json")
        )
    except (MlflowException, OSError):  # a version made challenger by hand has no decision of ours
        recorded = None
    if recorded is None:
        for key, value in tags.items():
            client.set_model_version_tag(config.model_name, version, key, value)
        client.update_model_version(config.model_name, version, description=f"{tags[f'{TAG}decision']}: {reason}")
        log.info("%s v%s: %s", tags[f"{TAG}decision"], version, reason)
        return
    concluded = recorded.model_copy(
        update={
            "verdict": Verdict.PROMOTE if promoted else Verdict.REJECT,
            "reason": f"{reason}; at its cycle: {recorded.reason}",
            "challenger": False,
            "shadow": tally,
            "decided_at": datetime.now(UTC).replace(microsecond=0),
        }
    )
    tags[f"{TAG}reason"] = concluded.reason[:5000]
    for key, value in tags.items():
        client.set_model_version_tag(config.model_name, version, key, value)
    client.update_model_version(config.model_name, version, description=f"{concluded.state}: {concluded.reason}")
    log_decision(config, client, concluded, client.get_run(run_id).data.tags, tags)
    amend_cycle_decision(config, concluded)
    log.info("%s v%s: %s", concluded.state, version, concluded.reason)
    log_version_url(tracking, config, version)
