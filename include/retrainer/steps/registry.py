"""Promote and roll back: the model registry's ``@champion`` alias moves only through these."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from retrainer import history, locks, storage
from retrainer.promotion import Decision, Verdict, decide
from retrainer.shadow import TALLY_ARTIFACT, TALLY_TAG, ShadowTally
from retrainer.steps.approval import Approval
from retrainer.steps.common import CHALLENGER, CHAMPION, TAG, StepResult, alias_version, champion_version
from retrainer.steps.serving import ServingCheck, serving_check
from retrainer.tracking import prints_logged

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from retrainer.config import ProjectConfig
    from retrainer.steps.evaluation import Evaluation
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)

PROVENANCE_TAGS = ("training_backend", "trainer_image", "trainer_image_id", "trained_on")


class DecisionRecord(Decision, StepResult):
    """A promotion decision (the gate's :class:`~retrainer.promotion.Decision`) as recorded on the run
    (``decision/decision.json``), with the version and the cycle.

    Attributes:
        run_id: The candidate run.
        model: The registered model.
        cycle_id: The cycle.
        dry_run: Decided and recorded, nothing registered.
        decided_at: When.
        version: The new model version (None on a dry run, or when superseded).
        superseded: The champion moved after the candidate was compared with it (another promotion or a
            rollback won the race): rejected, nothing registered (or, after approval, the alias not moved).
        awaiting_approval: The gate promotes and ``promotion.approval`` is required: the version is registered,
            ``@champion`` waits for a reviewer (:func:`conclude_approval`).
        approval: The reviewer's answer, once given.
        serving: The serving check of a candidate the gate promoted (None when it did not run).
        challenger: ``promotion.mode: shadow``: the gate promoted, the version became ``@challenger`` and
            replaces the champion only after winning on newly labelled batches (:mod:`retrainer.steps.shadow`).
        shadow: The challenger's tally, once its shadow ended (promoted or retired).
        resumed: What an earlier attempt at this promotion had done before it stopped (e.g. MLflow went down
            after the version was registered), None for a first attempt. The rerun completes that work
            (the same version, the alias moved once) and says so here, on the version and on the run.
    """

    run_id: str
    model: str
    cycle_id: str | None
    dry_run: bool
    decided_at: datetime
    version: str | None = None
    superseded: bool = False
    awaiting_approval: bool = False
    approval: Approval | None = None
    serving: ServingCheck | None = None
    challenger: bool = False
    shadow: ShadowTally | None = None
    resumed: str | None = None

    @property
    def promoted(self) -> bool:
        """Whether ``@champion`` moved to the candidate."""
        return (
            self.verdict is Verdict.PROMOTE
            and not self.dry_run
            and not self.awaiting_approval
            and not self.challenger
        )

    @property
    def state(self) -> str:
        """The decision tag's value: ``promoted``, ``rejected``, ``awaiting_approval``, ``challenger`` or
        ``dry_run:<verdict>``."""
        if self.dry_run:
            return f"dry_run:{self.verdict.value}"
        if self.challenger:
            return "challenger"
        return "awaiting_approval" if self.awaiting_approval else self.verdict.value


def champion_lock(config: ProjectConfig) -> str:
    """The project's lease on its ``@champion`` alias: promote and rollback move it one at a time."""
    return storage.join(config.data.root_uri, "locks", "champion.json")


def promote(
    config: ProjectConfig,
    tracking: Tracking,
    run_id: str,
    evaluation: Evaluation,
    dry_run: bool = False,
    *,
    lock_wait_s: float = 300.0,
) -> DecisionRecord:
    """Register the candidate as a new model version and move ``@champion`` to it only if it wins.

    The decision (verdict, reason, both scores, margin) is written as tags on the version and on the run, and
    as the run artifact ``decision/decision.json``. A rejected version stays in the registry, tagged with why.
    With ``dry_run`` (or ``promotion.mode: dry_run``) the decision is computed and logged on the run but nothing
    is registered; with ``promotion.mode: disabled`` the decision is recorded as rejected (saying what the gate
    would have said) and nothing is registered. With
    ``promotion.approval: required`` a candidate the gate promotes is registered and recorded as awaiting
    approval; ``@champion`` moves only through :func:`conclude_approval`.

    The check that the champion is still the evaluated one and the alias move happen under the project's
    lease on its alias (:func:`champion_lock`), so a rollback or another promotion cannot slip in between.

    When the champion moved after the candidate was compared with it (another promotion or a rollback won
    the race), nothing is registered and the decision is recorded as rejected, ``superseded: …``, naming the
    move. After a move the alias is read back; every move is appended to the alias history
    (:mod:`retrainer.history`).

    Raises:
        RuntimeError: The alias does not point at the new version right after the move.
        LockTimeout: Another promotion or rollback of the project held the alias for longer than
            ``lock_wait_s``.
    """
    owner = locks.default_owner(f"promote of run {run_id}")
    dry_run = dry_run or config.promotion.mode == "dry_run"
    with locks.held(champion_lock(config), owner, wait_s=lock_wait_s), tracking.active():
        return _promote(config, tracking, run_id, evaluation, dry_run, owner)


def _promote(
    config: ProjectConfig, tracking: Tracking, run_id: str, evaluation: Evaluation, dry_run: bool, owner: str
) -> DecisionRecord:
    import mlflow

    client = tracking.client()
    current = champion_version(client, config)
    current_version = None if current is None else str(current.version)
    # A retry after a partial promote reuses the version registered for this run instead of adding another.
    registered = (
        [] if dry_run else client.search_model_versions(f"name='{config.model_name}' and run_id='{run_id}'")
    )
    resumed = None
    if registered:
        earlier = registered[0]
        resumed = f"an earlier attempt registered v{earlier.version}"
        if current_version == str(earlier.version):
            current_version = evaluation.champion_version  # the alias already moved in the earlier try
            resumed += " and moved @champion to it"
        decided = (earlier.tags or {}).get(f"{TAG}decision")
        resumed += (
            f" (its decision {'tag said ' + repr(decided) if decided else 'was never recorded'}) and stopped"
        )
        log.warning("promotion of run %s resumes: %s", run_id, resumed)
    decision = decide(
        config,
        evaluation.candidate_metrics,
        evaluation.champion_metrics,
        evaluation.champion_version,
        evaluation.comparisons,
        compatibility=evaluation.compatibility,
        slices=evaluation.slices,
        champion_problem=evaluation.champion_problem,
    )
    superseded = current_version != evaluation.champion_version
    if superseded:  # another run promoted (or rolled back) while this one was being evaluated
        decision = decision.model_copy(
            update={
                "verdict": Verdict.REJECT,
                "reason": f"superseded: {_moved(client, config, evaluation.champion_version, current_version)} "
                f"after this candidate was compared with v{evaluation.champion_version}; the gate had said: "
                f"{decision.reason}",
            }
        )
    disabled = config.promotion.mode == "disabled"
    if disabled:
        decision = decision.model_copy(
            update={
                "verdict": Verdict.REJECT,
                "reason": f"promotion is disabled (promotion.mode: disabled); the gate would have said: "
                f"{decision.reason}",
            }
        )
    run = client.get_run(run_id)
    cycle_id = run.data.tags.get(f"{TAG}cycle_id")
    version = None
    if not dry_run and not superseded and not disabled:
        # Registered before the serving check, which loads it as a consumer would; a rejected version stays.
        if registered:
            model_version = registered[0]
        else:
            with prints_logged(log):
                model_version = mlflow.register_model(run.data.tags[f"{TAG}model_uri"], config.model_name)
        version = str(model_version.version)
    serving = None
    if decision.promoted and not superseded and config.promotion.serving.enabled:
        candidate_uri = f"models:/{config.model_name}/{version}" if version else run.data.tags[f"{TAG}model_uri"]
        champion_uri = (  # a champion that cannot be loaded is not measured beside it
            f"models:/{config.model_name}/{evaluation.champion_version}"
            if evaluation.champion_version and evaluation.champion_problem is None
            else None
        )
        serving = serving_check(config, tracking, run_id, candidate_uri, champion_uri)
        if not serving.passed:
            decision = decision.model_copy(
                update={
                    "verdict": Verdict.REJECT,
                    "reason": f"{serving.reason}; the gate had said: {decision.reason}",
                }
            )
    awaiting = config.promotion.approval == "required" and decision.promoted and not dry_run and not superseded
    # Shadow mode: a promoted candidate shadows the champion first; a first model has none to shadow.
    shadowing = (
        config.promotion.mode == "shadow"
        and decision.promoted
        and evaluation.champion_version is not None
        and evaluation.champion_problem is None  # a champion that cannot load cannot be shadowed
        and not dry_run
        and not superseded
    )
    if shadowing:
        rule = config.promotion.shadow
        decision = decision.model_copy(
            update={
                "reason": f"{decision.reason}; shadow mode: @challenger until it wins {rule.wins} newly labelled "
                f"batches against v{evaluation.champion_version}"
            }
        )
    state = "challenger" if shadowing else "awaiting_approval" if awaiting else decision.verdict.value
    tags = {
        f"{TAG}decision": state if not dry_run else f"dry_run:{decision.verdict.value}",
        f"{TAG}reason": decision.reason,
        f"{TAG}candidate_{decision.metric}": f"{decision.candidate:.6g}",
        f"{TAG}champion_{decision.metric}": "none" if decision.champion is None else f"{decision.champion:.6g}",
        f"{TAG}previous_champion": evaluation.champion_version or "none",
        f"{TAG}rule": decision.rule,
        **(
            {f"{TAG}diff_{decision.metric}": decision.comparison.interval_text()}
            if decision.comparison is not None
            else {}
        ),
        **({f"{TAG}broken_rows": decision.compatibility.text()} if decision.compatibility is not None else {}),
        **(
            {
                f"{TAG}regressed_slices": ", ".join(s.name for s in decision.slices if s.status == "regressed")
                or "none"
            }
            if decision.slices
            else {}
        ),
        **(_serving_tags(serving) if serving is not None else {}),
        f"{TAG}cycle_id": cycle_id or "",
        **({f"{TAG}resumed": resumed} if resumed else {}),
        f"{TAG}code_version": run.data.tags.get(f"{TAG}code_version", ""),
        **{
            f"{TAG}{key}": run.data.tags[f"{TAG}{key}"]
            for key in PROVENANCE_TAGS
            if f"{TAG}{key}" in run.data.tags
        },
    }
    if version is not None:
        for key, value in tags.items():
            client.set_model_version_tag(config.model_name, version, key, value)
        client.set_model_version_tag(config.model_name, version, f"{TAG}run_id", run_id)
        # Shown in the registry's version list: the decision in words.
        client.update_model_version(
            config.model_name, version, description=f"{state.replace('_', ' ')}: {decision.reason}"
        )
        if config.description and not client.get_registered_model(config.model_name).description:
            client.update_registered_model(config.model_name, description=config.description)
        if shadowing:
            assert evaluation.champion_version is not None
            _set_challenger(
                client, config, evaluation.champion_version, version, run_id, cycle_id, owner, decision
            )
        elif decision.promoted and not awaiting:
            move_alias(
                client,
                config,
                CHAMPION,
                evaluation.champion_version,
                version,
                run_id,
                cycle_id,
                owner,
                decision.reason,
            )
    record = DecisionRecord(
        **dict(decision),
        run_id=run_id,
        model=config.model_name,
        cycle_id=cycle_id,
        dry_run=dry_run,
        decided_at=datetime.now(UTC).replace(microsecond=0),
        version=version,
        superseded=superseded,
        awaiting_approval=awaiting,
        serving=serving,
        challenger=shadowing,
        resumed=resumed,
    )
    log_decision(config, client, record, run.data.tags, {**tags, f"{TAG}version": version or "none"})
    log.info("%s v%s: %s", state.replace("_", " "), version, decision.reason)
    log_version_url(tracking, config, version)
    return record


def _serving_tags(serving: ServingCheck) -> dict[str, str]:
    figures = serving.candidate
    return {
        f"{TAG}serving": "passed" if serving.passed else "failed",
        f"{TAG}serving_p95_ms_per_1k_rows": f"{figures.p95_ms_per_1k_rows:.4g}",
        f"{TAG}serving_peak_memory_mb": f"{figures.peak_memory_mb:.4g}",
    }


def log_decision(
    config: ProjectConfig,
    client: MlflowClient,
    record: DecisionRecord,
    run_tags: dict[str, str],
    tags: dict[str, str],
) -> None:
    """The decision on the run: its tags, ``decision/decision.json`` and the model card (linked from the
    version)."""
    import mlflow

    with mlflow.start_run(run_id=record.run_id):
        mlflow.set_tags(tags)
        mlflow.log_dict(record.to_json(), "decision/decision.json")
        _log_model_card(config, record, run_tags)
    if record.version is not None:
        card = f"{client.get_run(record.run_id).info.artifact_uri}/model_card/model_card.html"
        client.set_model_version_tag(config.model_name, record.version, f"{TAG}model_card", card)


def log_version_url(tracking: Tracking, config: ProjectConfig, version: str | None) -> None:
    if version is not None and tracking.uri.startswith("http"):
        log.info(
            "model version and its card: %s/#/models/%s/versions/%s",
            tracking.uri.rstrip("/"),
            config.model_name,
            version,
        )


def conclude_approval(
    config: ProjectConfig, tracking: Tracking, run_id: str, approval: Approval, *, lock_wait_s: float = 300.0
) -> DecisionRecord:
    """Apply a reviewer's answer to a promotion awaiting approval.

    Under the project's alias lease: approved, ``@champion`` moves to the version if it still points at the
    champion the candidate was compared with (else the decision is superseded, nothing moves); rejected (or no
    answer in time), the version stays registered, tagged with who rejected it. The answer is recorded on the
    run (``decision/decision.json``, the model card), on the version and, for a move, in the alias history
    (action ``approval``, by the reviewer). A second call for the same run returns the recorded decision.

    Raises:
        ValueError: The run's decision is not awaiting approval.
    """
    owner = locks.default_owner(f"approval of run {run_id}")
    with locks.held(champion_lock(config), owner, wait_s=lock_wait_s), tracking.active():
        import mlflow

        client = tracking.client()
        recorded = mlflow.artifacts.load_dict(f"runs:/{run_id}/decision/decision.json")
        record = DecisionRecord.model_validate(recorded)
        if record.approval is not None:
            return record  # a retry after the answer was recorded
        if not record.awaiting_approval or record.version is None:
            raise ValueError(
                f"the decision of run {run_id} is not awaiting approval ({record.state}: {record.reason})"
            )
        current = champion_version(client, config)
        current_version = None if current is None else str(current.version)
        superseded = current_version not in (record.champion_version, record.version)
        answer = approval.text(config.promotion.approval_timeout_minutes)
        if superseded:
            verdict = Verdict.REJECT
            moved = _moved(client, config, record.champion_version, current_version)
            reason = f"superseded: {moved} while v{record.version} awaited approval ({answer}); {record.reason}"
        elif approval.approved:
            verdict, reason = Verdict.PROMOTE, f"{answer}: {record.reason}"
            move_alias(
                client,
                config,
                CHAMPION,
                record.champion_version,
                record.version,
                run_id,
                record.cycle_id,
                approval.by or owner,
                reason,
                action="approval",
            )
        else:
            verdict, reason = Verdict.REJECT, f"{answer}; the gate had said: {record.reason}"
        concluded = record.model_copy(
            update={
                "verdict": verdict,
                "reason": reason,
                "awaiting_approval": False,
                "approval": approval,
                "superseded": superseded,
                "decided_at": datetime.now(UTC).replace(microsecond=0),
            }
        )
        tags = {
            f"{TAG}decision": concluded.state,
            f"{TAG}reason": reason,
            f"{TAG}approval": "approved" if approval.approved else "rejected",
            f"{TAG}approved_by" if approval.approved else f"{TAG}rejected_by": approval.by or "timeout",
            f"{TAG}approval_at": approval.at.isoformat(),
        }
        for key, value in tags.items():
            client.set_model_version_tag(config.model_name, record.version, key, value)
        client.update_model_version(config.model_name, record.version, description=f"{verdict.value}: {reason}")
        log_decision(config, client, concluded, client.get_run(run_id).data.tags, tags)
    log.info("%s v%s: %s", verdict.value, record.version, reason)
    log_version_url(tracking, config, record.version)
    return concluded


def _log_model_card(config: ProjectConfig, record: DecisionRecord, run_tags: dict[str, str]) -> None:
    """Log the candidate's model card (Markdown, HTML, the plot of the differences) on the active run."""
    import mlflow

    from retrainer import model_card
    from retrainer.catalog import Catalog, CatalogError

    try:
        batches = mlflow.artifacts.load_dict(f"runs:/{record.run_id}/data/training_batches.json")["batches"]
    except Exception:  # the card is still useful without the window's hashes
        batches = [{"batch_id": b} for b in json.loads(run_tags.get(f"{TAG}window", "[]"))]
    catalog = Catalog(config)
    for batch in batches:
        try:
            batch["status"] = catalog.get(batch["batch_id"]).status.value
        except CatalogError:
            batch["status"] = "unknown"
    text = model_card.render_markdown(
        config, record, version=record.version, run_id=record.run_id, tags=run_tags, batches=batches
    )
    title = f"Model card: {config.model_name} v{record.version or '-'}"
    mlflow.log_text(text, "model_card/model_card.md")
    mlflow.log_text(model_card.render_html(text, title), "model_card/model_card.html")
    figure = model_card.differences_figure(record)
    if figure is not None:
        mlflow.log_figure(figure, "model_card/differences.png")


def _moved(client: MlflowClient, config: ProjectConfig, compared: str | None, current: str | None) -> str:
    """``the champion moved from v1 to v2 (promotion by promote of run … on host (pid 7) at …)``."""
    text = f"the champion moved from v{compared} to v{current}"
    moves = [m for m in history.read_history(client, config.model_name) if m.alias == CHAMPION]
    if moves and moves[-1].to_version == current:
        text += f" ({moves[-1].action} by {moves[-1].by} at {moves[-1].at.isoformat()})"
    return text


def move_alias(
    client: MlflowClient,
    config: ProjectConfig,
    alias: str,
    previous: str | None,
    version: str | None,
    run_id: str | None,
    cycle_id: str | None,
    owner: str,
    reason: str,
    *,
    action: history.Action = "promotion",
) -> None:
    """Point ``alias`` at ``version`` (None: remove it), read it back, and append the move to the alias history
    once. Call it while holding the project's alias lease (:func:`champion_lock`)."""
    if version is None:
        client.delete_registered_model_alias(config.model_name, alias)
    else:
        client.set_registered_model_alias(config.model_name, alias, version)
    now = alias_version(client, config, alias)
    if (None if now is None else str(now.version)) != version:
        raise RuntimeError(
            f"@{alias} of {config.model_name} points at v{now.version if now else None} right after it was moved "
            f"to v{version}: something moves the alias without the platform's lease"
        )
    moves = history.read_history(client, config.model_name)
    if run_id is not None and any(
        m.alias == alias and m.run_id == run_id and m.to_version == version and m.action == action for m in moves
    ):
        return  # a retry after the earlier try had recorded the move
    history.append_move(
        client,
        config.model_name,
        alias=alias,
        from_version=previous,
        to_version=version,
        action=action,
        by=owner,
        run_id=run_id,
        cycle_id=cycle_id,
        reason=reason,
    )


def _set_challenger(
    client: MlflowClient,
    config: ProjectConfig,
    champion: str,
    version: str,
    run_id: str,
    cycle_id: str | None,
    owner: str,
    decision: Decision,
) -> None:
    """Make ``version`` the ``@challenger`` of ``champion`` with an empty tally; a challenger it replaces is
    tagged with why."""
    previous = alias_version(client, config, CHALLENGER)
    previous_version = None if previous is None else str(previous.version)
    if previous_version == version:
        return  # a retry after the earlier try had set it
    move_alias(
        client,
        config,
        CHALLENGER,
        previous_version,
        version,
        run_id,
        cycle_id,
        owner,
        decision.reason,
        action="shadow",
    )
    write_tally(
        client,
        config,
        run_id,
        ShadowTally(
            challenger_version=version, champion_version=champion, since=datetime.now(UTC).replace(microsecond=0)
        ),
    )
    if previous_version is not None:
        note = f"replaced as @challenger by v{version}, a fresher candidate the gate promoted, before it finished"
        client.set_model_version_tag(config.model_name, previous_version, f"{TAG}shadow_outcome", note)


def write_tally(client: MlflowClient, config: ProjectConfig, run_id: str, tally: ShadowTally) -> None:
    """The challenger's tally: the whole of it on its run (``shadow/tally.json``), one line on its version."""
    client.log_dict(run_id, tally.model_dump(mode="json"), TALLY_ARTIFACT)  # leaves the run's status alone
    client.set_model_version_tag(
        config.model_name, tally.challenger_version, TALLY_TAG, tally.text(config.promotion.shadow)
    )


def alias_history(config: ProjectConfig, tracking: Tracking) -> list[history.AliasMove]:
    """Every recorded move of the project's aliases (promotions, rollbacks), oldest first."""
    with tracking.active():
        return history.read_history(tracking.client(), config.model_name)
