"""A project's MLflow experiment as people see it in the MLflow UI.

The experiment is marked for MLflow's model-training view (not its GenAI overview), carries a description of
what its runs are and which columns to add, and names the primary metric; runs are named after the newest week
of data they are about and what they are (``2013-01-14 candidate``, ``2013-01-14 drift``), the Airflow run id
staying in the ``retrainer.cycle_id`` tag. What a user changed in the UI (the kind, the description) is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from retrainer.config import ProjectConfig

KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"  # what MLflow's UI calls its model-training experiments
DESCRIPTION_TAG = "mlflow.note.content"
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"
PRIMARY_METRIC_GREATER_TAG = "mlflow.experiment.primaryMetric.greaterIsBetter"

RunKind = Literal["candidate", "drift"]


def run_name(batch_ids: Sequence[str], kind: RunKind) -> str:
    """``<newest batch id> <kind>``, e.g. ``2013-01-14 candidate``: what a run is, readable when truncated.

    Raises:
        ValueError: No batch id (a run is always about some data).
    """
    if not batch_ids:
        raise ValueError(f"a {kind} run needs the batches it is about, got none")
    return f"{max(batch_ids)} {kind}"


def description(config: ProjectConfig) -> str:
    """The experiment's description (Markdown): the model, its runs, and the columns worth adding."""
    metric = config.metric.name
    better = "higher" if config.metric.greater_is_better else "lower"
    about = f"{config.description.strip()}\n\n" if config.description else ""
    return (
        f"{about}Retraining of the registered model **{config.model_name}** ({config.task.value}) by "
        "retrainer.\n\n"
        f"- `<week> candidate`: a model trained on the window of batches up to that week, judged against the "
        f"champion on the same held-out rows ({metric}, {better} is better).\n"
        "- `<week> drift`: that week's data against the champion's reference data (Evidently report attached).\n\n"
        f"Columns to add: tag `retrainer.decision` (promoted, rejected...), tag `retrainer.reason`, metrics "
        f"`holdout_{metric}` (the candidate) and `champion_holdout_{metric}` (the champion on the same rows)."
    )


def wanted_tags(config: ProjectConfig) -> dict[str, str]:
    """The tags the experiment should carry."""
    return {
        KIND_TAG: MODEL_TRAINING,
        DESCRIPTION_TAG: description(config),
        PRIMARY_METRIC_TAG: f"holdout_{config.metric.name}",
        PRIMARY_METRIC_GREATER_TAG: str(config.metric.greater_is_better).lower(),
    }


def use_experiment(config: ProjectConfig) -> str:
    """Make the project's experiment the active one (``mlflow.set_experiment``, inside ``Tracking.active``),
    giving it the tags it lacks; returns its id. Tags it already has, a user's edits included, stay."""
    import mlflow

    experiment = mlflow.set_experiment(config.name)
    missing = {key: value for key, value in wanted_tags(config).items() if key not in experiment.tags}
    if missing:
        mlflow.set_experiment_tags(missing)
    return experiment.experiment_id
