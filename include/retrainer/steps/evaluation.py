"""Evaluate: the candidate and the current champion, scored on the same held-out rows."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from pydantic import Field

from retrainer.catalog import Catalog
from retrainer.comparison import Compatibility, MetricComparison, SliceComparison
from retrainer.steps.common import TAG, StepResult, champion_version, load_model, parse_cutoff
from retrainer.trusted_models import UntrustedModelError

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig
    from retrainer.tracking import Tracking

log = logging.getLogger(__name__)


class Evaluation(StepResult):
    """Both models on the same held-out rows.

    Attributes:
        metric: The primary metric.
        candidate: The candidate's score.
        champion: The champion's score, None when there is no champion.
        champion_version: The champion's version.
        holdout_rows: How many rows both were scored on.
        candidate_metrics: Every metric of the candidate.
        champion_metrics: Every metric of the champion.
        comparisons: The paired bootstrap comparison of the primary and secondary metrics (empty without a
            champion): each difference with its interval.
        compatibility: The held-out rows the candidate breaks (None without a champion).
        slices: The primary metric per slice of ``promotion.slices.columns`` (empty without a champion).
        champion_problem: Why the champion could not be loaded (its artifact deleted, altered or not the
            platform's own), None when it was scored. The candidate is then judged on the floors only.
    """

    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    holdout_rows: int
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    comparisons: dict[str, MetricComparison] = Field(default_factory=dict)
    compatibility: Compatibility | None = None
    slices: list[SliceComparison] = Field(default_factory=list)
    champion_problem: str | None = None


def evaluate(config: ProjectConfig, tracking: Tracking, run_id: str) -> Evaluation:
    """Score the candidate of ``run_id`` and the current champion on the same held-out rows.

    The held-out rows are rebuilt from the run's recorded window (hash-checked) and split point.

    Raises:
        ValueError: The run is not a candidate, or the champion trained on part of the held-out rows.
        ModelingError: The metric cannot be computed on the held-out rows.
    """
    import mlflow

    from retrainer import modeling

    with tracking.active():
        client = tracking.client()
        tags = client.get_run(run_id).data.tags
        if tags.get(f"{TAG}kind") != "candidate":
            raise ValueError(f"MLflow run {run_id} is not a candidate run of the train step")
        catalog = Catalog(config)
        columns = modeling.model_columns(config, *config.promotion.slices.columns)
        frame = catalog.load([catalog.get(b) for b in json.loads(tags[f"{TAG}window"])], columns=columns)
        holdout_start = tags[f"{TAG}holdout_start"]
        holdout = modeling.split_holdout(frame, config, holdout_start=holdout_start).holdout
        features, target = modeling.prepare(holdout, config)
        candidate_predictions = modeling.predict_for_metric(
            load_model(client, config, tags[f"{TAG}model_uri"]), features, config.task
        )
        candidate_metrics = modeling.compute_metrics(target, candidate_predictions, config.task)
        champion = champion_version(client, config)
        champion_metrics = None
        champion_problem: str | None = None
        comparisons: dict[str, MetricComparison] = {}
        compatible: Compatibility | None = None
        slices: list[SliceComparison] = []
        metric = config.metric.name
        if champion is not None:
            trained_until = client.get_run(champion.run_id).data.tags.get(f"{TAG}holdout_start", "")
            if trained_until and parse_cutoff(trained_until) > parse_cutoff(holdout_start):
                # e.g. a backfill of an old week: the champion trained on part of these rows and would be favoured.
                raise ValueError(
                    f"champion v{champion.version} was trained on rows up to {trained_until}, after this cycle's "
                    f"holdout starts ({holdout_start}): the comparison would not be fair; use a later cutoff"
                )
            try:
                champion_model = load_model(client, config, f"models:/{config.model_name}/{champion.version}")
            except UntrustedModelError as error:
                # A champion that cannot be loaded cannot serve either: replacing it with a candidate that
                # clears the floors restores a working model, so the cycle goes on and says why. An unreachable
                # registry is no such finding (it raises something else, and the cycle fails to be retried).
                champion_problem = str(error)
                log.error(
                    "champion v%s cannot be loaded: %s; the candidate is judged on the floors only",
                    champion.version,
                    error,
                )
            else:
                champion_predictions = modeling.predict_for_metric(champion_model, features, config.task)
                champion_metrics = modeling.compute_metrics(target, champion_predictions, config.task)
        for label, scores in (("candidate", candidate_metrics), ("champion", champion_metrics)):
            if scores is not None and metric not in scores:
                raise modeling.ModelingError(
                    f"{metric} of the {label} cannot be computed on the {len(holdout)} held-out rows "
                    "(for roc_auc both classes must be present): widen the window or the holdout"
                )
        if champion_metrics is not None:
            comparisons, compatible, slices = _compare(
                config, holdout, target, candidate_predictions, champion_predictions
            )
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({f"holdout_{k}": v for k, v in candidate_metrics.items()})
            if champion is not None:
                mlflow.set_tag(f"{TAG}champion_version", str(champion.version))
            if champion_metrics is not None:
                mlflow.log_metrics({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
            if champion_problem is not None:
                mlflow.set_tag(f"{TAG}champion_problem", champion_problem[:5000])
            for name, comparison in comparisons.items():
                mlflow.log_metrics(
                    {
                        f"diff_{name}": comparison.difference,
                        f"diff_{name}_low": comparison.difference_low,
                        f"diff_{name}_high": comparison.difference_high,
                        f"improvement_{name}_low": comparison.improvement_low,
                    }
                )
            if compatible is not None:
                mlflow.log_metrics({"broken_rows": compatible.rate, "broken_rows_high": compatible.rate_high})
            regressed = [s.name for s in slices if s.status == "regressed"]
            if slices:
                mlflow.log_dict([s.model_dump(mode="json") for s in slices], "evaluation/slices.json")
                mlflow.log_metric("regressed_slices", len(regressed))
    return Evaluation(
        metric=metric,
        candidate=candidate_metrics[metric],
        champion=None if champion_metrics is None else champion_metrics[metric],
        champion_version=None if champion is None else str(champion.version),
        holdout_rows=len(holdout),
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics,
        comparisons=comparisons,
        compatibility=compatible,
        slices=slices,
        champion_problem=champion_problem,
    )


def _compare(
    config: ProjectConfig, holdout: Any, target: Any, candidate: Any, champion: Any
) -> tuple[dict[str, MetricComparison], Compatibility, list[SliceComparison]]:
    """The paired bootstrap of the primary and secondary metrics on the held-out rows (or their groups), the
    rows the candidate breaks, and the primary metric per slice."""
    from retrainer.comparison import Resampling, compare, compare_slices, compatibility
    from retrainer.config import METRICS

    rule = config.promotion
    names = [config.metric.name, *rule.secondary]
    directions = {n: config.metric.greater_is_better if n == config.metric.name else METRICS[n][1] for n in names}
    labelled = holdout.loc[holdout[config.schema_.target].notna()]  # the rows prepare() kept, in its order
    groups = None if rule.group_by is None else labelled[rule.group_by].astype(str).to_numpy()
    y = target.to_numpy()
    # Drawn once: the metrics, the broken rows and every slice are figures of the same resamples.
    resampling = Resampling.draw(
        len(y), groups=groups, unit=rule.group_by or "row", resamples=rule.resamples, seed=rule.seed
    )
    bootstrap = {"confidence": rule.confidence, "resampling": resampling}
    comparisons = compare(directions, config.task.value, y, candidate, champion, **bootstrap)
    compatible = compatibility(
        config.task.value, y, candidate, champion, tolerance=rule.compatibility.tolerance, **bootstrap
    )
    slices = compare_slices(
        config.metric.name,
        config.metric.greater_is_better,
        config.task.value,
        y,
        candidate,
        champion,
        {column: labelled[column].astype(str).to_numpy() for column in rule.slices.columns},
        min_rows=rule.slices.min_rows,
        margin=rule.slices.margin,
        alpha=rule.slices.alpha,
        groups=groups,
        unit=rule.group_by or "row",
        resamples=rule.resamples,
        seed=rule.seed,
        **bootstrap,
    )
    return comparisons, compatible, slices
