"""Project configuration: one YAML file describes one model project.

A project names where its batches land, their schema, the learning task, the estimator, how candidates are
judged against the champion, how drift is measured and which data a cycle trains and evaluates on. Nothing
else in the platform is specific to a dataset.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_ENV_PATTERN = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class ConfigError(ValueError):
    """A project configuration file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnType(StrEnum):
    """Logical column types of a batch schema."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING = "string"
    CATEGORY = "category"
    DATETIME = "datetime"


NUMERIC_TYPES = frozenset({ColumnType.INT, ColumnType.FLOAT, ColumnType.BOOL})
CATEGORICAL_TYPES = frozenset({ColumnType.STRING, ColumnType.CATEGORY})


class Task(StrEnum):
    """Supported learning tasks."""

    REGRESSION = "regression"
    BINARY_CLASSIFICATION = "binary_classification"


# Metric name -> (tasks it applies to, whether greater is better).
METRICS: dict[str, tuple[frozenset[Task], bool]] = {
    "rmse": (frozenset({Task.REGRESSION}), False),
    "mae": (frozenset({Task.REGRESSION}), False),
    "r2": (frozenset({Task.REGRESSION}), True),
    "roc_auc": (frozenset({Task.BINARY_CLASSIFICATION}), True),
    "log_loss": (frozenset({Task.BINARY_CLASSIFICATION}), False),
    "accuracy": (frozenset({Task.BINARY_CLASSIFICATION}), True),
    "f1": (frozenset({Task.BINARY_CLASSIFICATION}), True),
}

DEFAULT_ESTIMATORS = {
    Task.REGRESSION: "xgboost.XGBRegressor",
    Task.BINARY_CLASSIFICATION: "xgboost.XGBClassifier",
}


class DataConfig(_Strict):
    """Where a project's batches live.

    Attributes:
        root_uri: Local folder or ``s3://bucket/prefix``. Below it: ``landing/`` (new batches are dropped here),
            ``quarantine/`` (batches that failed validation, with their reports), ``catalog/`` (one JSON
            record per batch: hash, rows, period, status) and ``reports/`` (drift reports, cycle records).
        file_pattern: Glob of batch files inside ``landing/`` (matched in any letter case). Other files are
            left in place and logged, never read.
        period_days: The period each batch covers, from the date its id starts with (``2024-01-01``): rows
            outside it are refused at ingest. For ids that are not dates, the longest span a batch may cover.
            None: any span.
        max_file_mb: Batch files larger than this are quarantined at ingest without being read.
    """

    root_uri: str
    file_pattern: str = "*.parquet"
    period_days: float | None = Field(default=None, gt=0)
    max_file_mb: float = Field(default=2048.0, gt=0)

    @field_validator("root_uri")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if "://" in value and not value.startswith("s3://"):
            raise ValueError(f"{value!r}: only local folders and s3://bucket/prefix are supported")
        if value.startswith("s3://") and not value[len("s3://") :].split("/", 1)[0]:
            raise ValueError(f"{value!r} names no bucket: use s3://bucket/prefix")
        return value.rstrip("/")


class SchemaConfig(_Strict):
    """Columns of a batch and the roles of some of them."""

    columns: dict[str, ColumnType]
    target: str
    timestamp: str
    id: str | None = None
    # The zone naive timestamps are in; without it a batch with naive timestamps is refused, never guessed.
    naive_timezone: str | None = None

    @field_validator("naive_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as 'UTC' or 'America/New_York'") from None
        return value

    @model_validator(mode="after")
    def _roles_are_columns(self) -> SchemaConfig:
        if not self.columns:
            raise ValueError("columns must list at least one column")
        for role in ("target", "timestamp", "id"):
            name = getattr(self, role)
            if name is not None and name not in self.columns:
                raise ValueError(f"{role} column {name!r} is not in columns")
        if self.columns[self.timestamp] is not ColumnType.DATETIME:
            raise ValueError(f"timestamp column {self.timestamp!r} must have type 'datetime'")
        return self


class EstimatorConfig(_Strict):
    """The estimator at the end of the training pipeline.

    Attributes:
        class_path: Import path of a scikit-learn compatible estimator; defaults to xgboost for the task.
        params: Keyword arguments for the estimator.
        seed: Random seed, passed as ``random_state`` when the estimator takes one.
    """

    class_path: str | None = Field(default=None, alias="class")
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("class_path")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and "." not in value:
            raise ValueError(f"{value!r} is not an import path like 'sklearn.linear_model.Ridge'")
        return value


class MetricConfig(_Strict):
    """The primary metric every promotion decision is based on."""

    name: str
    direction: Literal["minimize", "maximize"] | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; choose one of {sorted(METRICS)}")
        return value

    @property
    def greater_is_better(self) -> bool:
        """Whether a larger value of the metric is better."""
        if self.direction is not None:
            return self.direction == "maximize"
        return METRICS[self.name][1]


class MetricThreshold(_Strict):
    """Conditions on one more metric besides the primary one, checked on the same held-out rows (as TFX has them).

    Attributes:
        floor: Absolute bound the candidate must meet (a maximum for a metric to minimise, a minimum for one to
            maximise); also for a first model.
        max_degradation: The candidate may be worse than the champion by at most this fraction (0.02: 2%).
        must_improve: The candidate must be better than the champion.
    """

    floor: float | None = None
    max_degradation: float | None = Field(default=None, ge=0.0)
    must_improve: bool = False


class CompatibilityConfig(_Strict):
    """Rows the candidate breaks: the champion got them right, the candidate gets them wrong.

    Attributes:
        tolerance: For regression, how much a row's absolute error may grow (in the target's unit) before the
            row counts as broken; None: the champion's mean absolute error on the held-out rows.
        max_broken: Reject a candidate that breaks more than this share of the held-out rows (point estimate;
            the interval is recorded beside it). None: recorded, never gated.
    """

    tolerance: float | None = Field(default=None, ge=0.0)
    max_broken: float | None = Field(default=None, gt=0.0, le=1.0)


class SliceGateConfig(_Strict):
    """Per-slice gates: a candidate that is better overall but clearly worse on a segment is rejected.

    Attributes:
        columns: Columns whose values define the slices (e.g. ``origin``, ``carrier``).
        min_rows: Slices with fewer held-out rows are reported as insufficient evidence, not tested.
        margin: Relative loss on a slice that is tolerated (0.05: 5% worse).
        alpha: Family-wise significance level: a slice regresses only if its Holm-adjusted p-value across every
            tested slice is below it.
    """

    columns: list[str] = Field(default_factory=list)
    min_rows: int = Field(default=200, ge=20)
    margin: float = Field(default=0.05, ge=0.0)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)


class ServingConfig(_Strict):
    """The serving check before ``@champion`` moves: the registered candidate is loaded as a consumer loads it
    (``mlflow.pyfunc.load_model("models:/<model>/<version>")``, in a fresh process) and predicts the newest
    accepted batch of its window.

    Attributes:
        enabled: Run the check on every candidate the gate would promote.
        max_p95_ms_per_1k_rows: Budget of the 95th percentile of the prediction latency per 1,000 rows.
        max_peak_memory_mb: Budget of the memory the loaded model and its predictions add to the process.
        max_factor_vs_champion: Latency and memory may be at most this many times the champion's (measured
            the same way, just before); None: no comparison.
        latency_noise_floor_ms: A latency under this never fails the comparison with the champion: at a few
            milliseconds per 1,000 rows the ratio is noise of the machine, not of the model.
        memory_noise_floor_mb: The same for memory.
        max_rows: Rows of the batch predicted (its newest ones).
        timeout_s: How long one model's check may take, loading included.
    """

    enabled: bool = True
    max_p95_ms_per_1k_rows: float | None = Field(default=None, gt=0)
    max_peak_memory_mb: float | None = Field(default=None, gt=0)
    max_factor_vs_champion: float | None = Field(default=3.0, ge=1.0)
    latency_noise_floor_ms: float = Field(default=50.0, ge=0)
    memory_noise_floor_mb: float = Field(default=64.0, ge=0)
    max_rows: int = Field(default=20_000, ge=1)
    timeout_s: float = Field(default=600.0, gt=0)


class ShadowConfig(_Strict):
    """``promotion.mode: shadow``: a candidate the gate promotes becomes ``@challenger``, not ``@champion``; it is
    scored beside the champion on each newly labelled batch that neither of them trained on, and replaces the
    champion only after it won on ``wins`` of them.

    A batch is a win when the paired bootstrap interval of the challenger's relative improvement on its rows lies
    above zero (at ``promotion.confidence``), a loss when it lies below, a tie otherwise.

    Attributes:
        wins: Won batches the challenger needs to become champion.
        max_losses: Lost batches after which the challenger is retired (the alias removed).
        max_batches: Judged batches after which a challenger short of its wins is retired.
        min_rows: Batches with fewer newly labelled rows are recorded as not judged (too little evidence).
    """

    wins: int = Field(default=3, ge=1)
    max_losses: int = Field(default=1, ge=1)
    max_batches: int = Field(default=8, ge=1)
    min_rows: int = Field(default=100, ge=20)

    @model_validator(mode="after")
    def _reachable(self) -> ShadowConfig:
        if self.wins > self.max_batches:
            raise ValueError(
                f"wins ({self.wins}) exceeds max_batches ({self.max_batches}): no challenger could ever win"
            )
        return self


class PromotionConfig(_Strict):
    """When a candidate replaces the champion.

    Candidate and champion are scored on the same held-out rows; a paired bootstrap of the rows (or of groups of
    rows, ``group_by``) gives an interval of the candidate's relative improvement on the primary metric.

    Attributes:
        rule: ``superiority``: promote only if the interval's lower bound reaches ``min_improvement`` (and is
            above zero); ``non_inferiority``: promote the fresher model unless it may be worse than the champion
            by more than ``margin`` (the interval's lower bound is below ``-margin``).
        min_improvement: Relative improvement the candidate must be shown to have (0.01 = 1 % better).
        margin: Relative loss a fresher model may have (non_inferiority).
        confidence: Level of the intervals (0.95).
        resamples: Bootstrap resamples (fewer on very large holdouts; at least 200).
        seed: Seed of the bootstrap: the same rows give the same interval.
        group_by: A column whose rows are resampled together because they are not independent (e.g. a day, an
            hour, a customer); None resamples rows.
        floor: Absolute bound on the primary metric for every candidate, the first model included (a maximum
            for a metric to minimise, a minimum for one to maximise). None: no bound.
        secondary: Floors and change thresholds on other metrics of the task, by name.
        compatibility: How broken rows are counted, and their optional ceiling.
        slices: Per-slice regression gates.
        approval: ``required``: a candidate the gate promotes is registered and waits for a reviewer (the
            Airflow task ``approve``, or ``retrainer approve``) before ``@champion`` moves; ``none``: it moves at
            once.
        approval_timeout_minutes: How long a reviewer has; without an answer the candidate is rejected.
        serving: The serving check of a candidate the gate promotes (latency, memory, output).
        mode: ``enabled``: the gate decides and ``@champion`` moves; ``dry_run``: every candidate is decided and
            recorded on its run, nothing is registered and no alias moves; ``disabled``: candidates are still
            trained and evaluated (their figures recorded), but none is registered or promoted; ``shadow``: a
            candidate the gate promotes becomes ``@challenger`` and replaces the champion only after it beat it
            on newly labelled batches (``shadow``; the first model becomes champion at once).
        shadow: How a challenger wins or is retired in ``shadow`` mode.
    """

    rule: Literal["superiority", "non_inferiority"] = "superiority"
    min_improvement: float = Field(default=0.0, ge=0.0)
    margin: float = Field(default=0.0, ge=0.0)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    resamples: int = Field(default=1000, ge=200, le=100_000)
    seed: int = 0
    group_by: str | None = None
    floor: float | None = None
    secondary: dict[str, MetricThreshold] = Field(default_factory=dict)
    compatibility: CompatibilityConfig = Field(default_factory=CompatibilityConfig)
    slices: SliceGateConfig = Field(default_factory=SliceGateConfig)
    approval: Literal["none", "required"] = "none"
    approval_timeout_minutes: float = Field(default=24 * 60, gt=0)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    mode: Literal["enabled", "dry_run", "disabled", "shadow"] = "enabled"
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)

    @model_validator(mode="after")
    def _shadow_without_approval(self) -> PromotionConfig:
        if self.mode == "shadow" and self.approval == "required":
            raise ValueError(
                "mode: shadow promotes the challenger on the evidence of labelled batches, outside a cycle, "
                "where no reviewer is asked: use approval: none with it, or mode: enabled with approval: required"
            )
        return self

    @field_validator("secondary")
    @classmethod
    def _known_metrics(cls, value: dict[str, MetricThreshold]) -> dict[str, MetricThreshold]:
        for name in value:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
        return value


class DriftConfig(_Strict):
    """How drift of a batch against the champion's reference data is measured (Evidently).

    Attributes:
        num_method: Evidently stattest for numeric columns (e.g. ``wasserstein``, ``ks``, ``psi``).
        cat_method: Evidently stattest for categorical columns (e.g. ``jensenshannon``, ``chisquare``).
        num_threshold: Threshold of the numeric stattest.
        cat_threshold: Threshold of the categorical stattest.
        share_threshold: The batch is drifted when at least this share of its columns drifted.
        key_features: Columns whose drift alone marks the batch as drifted.
        report_rows: Rows a side Evidently's HTML/JSON report is drawn from (a seeded sample beyond); the
            verdicts are computed on all rows.
        calibration: ``none``: a column drifts when its stattest passes its threshold (Evidently's verdict).
            ``resampled``: only when the shift is also beyond the reference's own variability at the batch's
            size, with false alarms controlled across columns (:mod:`retrainer.drift_calibration`); verdicts
            then mean the same at 500 rows as at 5 million.
        false_alarm_rate: With calibration: the chance of any false alarm in a batch (``bonferroni``) or the
            expected share of false alarms among drifted columns (``benjamini_hochberg``).
        correction: ``bonferroni`` or ``benjamini_hochberg``.
        calibration_resamples: Resampled distances a column's null is measured from.
    """

    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    num_threshold: float = Field(default=0.1, gt=0)
    cat_threshold: float = Field(default=0.1, gt=0)
    share_threshold: float = Field(default=0.5, gt=0, le=1)
    key_features: list[str] = Field(default_factory=list)
    report_rows: int = Field(default=100_000, ge=1_000)
    calibration: Literal["none", "resampled"] = "none"
    false_alarm_rate: float = Field(default=0.01, gt=0, lt=0.5)
    correction: Literal["bonferroni", "benjamini_hochberg"] = "bonferroni"
    calibration_resamples: int = Field(default=100, ge=20, le=10_000)

    @model_validator(mode="after")
    def _calibratable(self) -> DriftConfig:
        from retrainer.drift_methods import P_VALUE_METHODS, SHRINK_EXPONENT

        if self.calibration == "resampled":
            for field, method in (("num_method", self.num_method), ("cat_method", self.cat_method)):
                if method not in SHRINK_EXPONENT and method not in P_VALUE_METHODS:
                    raise ValueError(
                        f"drift.{field}: {method!r} cannot be calibrated (calibration: resampled); use "
                        f"{', '.join(sorted(SHRINK_EXPONENT))} or a p-value test such as ks or chisquare"
                    )
        return self


class WindowConfig(_Strict):
    """Which accepted batches a cycle uses: the newest ``batches`` of them up to the cycle's cutoff."""

    batches: int = Field(default=4, ge=1)


class HoldoutConfig(_Strict):
    """Rows held out from training: the newest ``fraction`` of the window's rows by timestamp."""

    fraction: float = Field(default=0.2, gt=0, lt=1)
    min_rows: int = Field(default=50, ge=1)


class AlertPolicyConfig(_Strict):
    """What a drift alert may start.

    Attributes:
        cooldown_minutes: No second alert-triggered retrain of the project within this many minutes of the last
            one; alerts in between are recorded as suppressed. Bursts of alerts thereby start one retrain.
    """

    cooldown_minutes: float = Field(default=60.0, ge=0)


class ConceptDriftConfig(_Strict):
    """When late labels show that the champion got worse (concept drift).

    Labels of a batch that landed without them arrive later as ``<root_uri>/labels/<batch_id>.parquet``: the
    target column, plus ``schema.id`` when the schema has one (rows are matched on it), otherwise one row per
    batch row in the batch's order.

    Attributes:
        max_degradation: Alert when the champion's primary metric on the newly labelled rows is worse than its
            held-out score (at its evaluation) by more than this fraction (0.05: 5%).
        min_rows: Fewer newly labelled rows than this are recorded but never alert (too noisy to judge).
    """

    max_degradation: float = Field(default=0.05, gt=0)
    min_rows: int = Field(default=50, ge=1)


_MEMORY_PATTERN = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]i?)?b?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory(value: str | int) -> int:
    """Bytes of a memory size written as Docker or Kubernetes do: ``512m``, ``4g``, ``4Gi``, ``2048Mi``, bytes.

    Raises:
        ValueError: The value is not such a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _MEMORY_PATTERN.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a memory size like '512m', '4g' or '4Gi'")
        unit = (match.group("unit") or "").lower().rstrip("i")
        size = int(float(match.group("number")) * _MEMORY_UNITS[unit])
    if size < 64 * 1024**2:
        raise ValueError(f"{value!r} is below 64 MiB, too little to start a trainer")
    return size


class TrainingBackend(StrEnum):
    """Where the train step runs; every backend runs the same ``retrainer train`` command."""

    LOCAL = "local"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"


class KubernetesTrainingConfig(_Strict):
    """Pod settings of the kubernetes backend (the cluster itself comes from the Airflow connection).

    Attributes:
        namespace: Namespace of the training pods.
        service_account: Service account of the pods (e.g. one allowed to read the data bucket).
        data_volume_claim: A PersistentVolumeClaim holding a local ``data.root_uri``, mounted read-only at the
            same path; not needed when the data is on S3.
        node_selector: Labels a node must have (e.g. a GPU pool).
        env_from_secret: A Kubernetes Secret whose keys become the trainer's environment (MLflow and S3
            credentials: the worker's own are not copied into a pod spec).
    """

    namespace: str = "default"
    service_account: str | None = None
    data_volume_claim: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    env_from_secret: str | None = None


class TrainingConfig(_Strict):
    """Where and with which resources candidates are trained.

    Attributes:
        backend: ``local`` (a subprocess of the worker), ``docker`` (a container on a Docker engine, through
            Airflow's Docker provider) or ``kubernetes`` (a pod, through KubernetesPodOperator).
        image: The trainer image of the docker and kubernetes backends (``make trainer-image`` builds it).
        cpus: CPU limit of the container or pod.
        memory: Memory limit (``4g``, ``4Gi``, ``2048Mi``); a trainer that exceeds it is killed.
        device: ``cuda`` trains xgboost on a GPU and requests one from Docker or Kubernetes.
        timeout_minutes: The train task fails when a run takes longer.
        kubernetes: Pod settings of the kubernetes backend.
    """

    backend: TrainingBackend = TrainingBackend.LOCAL
    image: str = "retrainer/trainer:latest"
    cpus: float = Field(default=2.0, gt=0)
    memory: str = "4g"
    device: Literal["cpu", "cuda"] = "cpu"
    timeout_minutes: float = Field(default=60.0, gt=0)
    kubernetes: KubernetesTrainingConfig = Field(default_factory=KubernetesTrainingConfig)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str:
        parse_memory(value)
        return str(value)

    @property
    def memory_bytes(self) -> int:
        """The memory limit in bytes."""
        return parse_memory(self.memory)


class ValidationConfig(_Strict):
    """What every new batch must pass: the Great Expectations suite, then the platform's own checks.

    The platform's checks refuse what training cannot take whatever the suite says: missing columns, text in
    numeric columns, infinite values, repeated ids (``schema.id``), and more than ``max_duplicate_rows`` (a
    share of the batch) rows that repeat another row exactly.
    """

    suite: str
    max_duplicate_rows: float = Field(default=0.01, ge=0.0, le=1.0)


class NotificationsConfig(_Strict):
    """Who hears of a failed run, and through which Airflow connection.

    Attributes:
        on_failure: E-mail addresses told when a run of the project's DAGs fails (one e-mail per failed run).
        smtp_conn_id: The Airflow connection of the SMTP server (``AIRFLOW_CONN_SMTP_DEFAULT``).
        from_email: Sender address; default: the connection's ``from_email`` extra.
    """

    on_failure: list[str] = Field(default_factory=list)
    smtp_conn_id: str = "smtp_default"
    from_email: str | None = None

    @field_validator("on_failure")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value


class ScheduleConfig(_Strict):
    """When the weekly cycle runs.

    Attributes:
        cron: Cron expression (UTC) of the cycle; each run covers the period since the previous tick.
        start_date: First tick considered.
        end_date: Last tick considered (None: no end).
        catchup: Whether the scheduler replays every tick since ``start_date`` that has not run yet (one run
            at a time); False runs only the latest. Past weeks can always be replayed with a backfill.
    """

    cron: str = "0 3 * * 1"
    start_date: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    end_date: datetime | None = None
    catchup: bool = False

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        from croniter import croniter

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid 5-field cron expression like '0 3 * * 1'")
        return value

    @field_validator("start_date", "end_date")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleConfig:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class ProjectConfig(_Strict):
    """One model project: a dataset, a model and the rules that keep it fresh."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    registered_model: str | None = None
    data: DataConfig
    schema_: SchemaConfig = Field(alias="schema")
    task: Task
    features: list[str]
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig)
    metric: MetricConfig
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    validation: ValidationConfig
    alerts: AlertPolicyConfig = Field(default_factory=AlertPolicyConfig)
    concept_drift: ConceptDriftConfig = Field(default_factory=ConceptDriftConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> ProjectConfig:
        schema = self.schema_
        if not self.features:
            raise ValueError("features must list at least one column")
        for feature in self.features:
            if feature not in schema.columns:
                raise ValueError(f"features: {feature!r} is not in schema.columns")
            if feature == schema.target:
                raise ValueError(f"features: the target {feature!r} cannot be a feature")
            if schema.columns[feature] is ColumnType.DATETIME:
                raise ValueError(f"features: {feature!r} is a datetime; derive numeric features from it upstream")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: a column is listed twice")
        tasks, _ = METRICS[self.metric.name]
        if self.task not in tasks:
            raise ValueError(f"metric: {self.metric.name!r} does not apply to task {self.task.value!r}")
        for key in self.drift.key_features:
            if key not in self.features:
                raise ValueError(f"drift.key_features: {key!r} is not a feature")
        promotion = self.promotion
        if promotion.group_by is not None and promotion.group_by not in schema.columns:
            raise ValueError(f"promotion.group_by: {promotion.group_by!r} is not in schema.columns")
        for column in promotion.slices.columns:
            if column not in schema.columns:
                raise ValueError(f"promotion.slices.columns: {column!r} is not in schema.columns")
            if column == schema.target:
                raise ValueError(f"promotion.slices.columns: {column!r} is the target")
        for name in promotion.secondary:
            if self.task not in METRICS[name][0]:
                raise ValueError(f"promotion.secondary: {name!r} does not apply to task {self.task.value!r}")
            if name == self.metric.name:
                raise ValueError(f"promotion.secondary: {name!r} is the primary metric; use promotion's own rule")
        if self.training.device == "cuda" and not self.estimator_class.startswith("xgboost."):
            raise ValueError(f"training.device: cuda needs an xgboost estimator, not {self.estimator_class}")
        kubernetes = self.training.kubernetes
        if (
            self.training.backend is TrainingBackend.KUBERNETES
            and "://" not in self.data.root_uri
            and not kubernetes.data_volume_claim
        ):
            raise ValueError(
                f"training.kubernetes.data_volume_claim: a pod cannot read the local folder {self.data.root_uri}; "
                "put the data on S3 or name the PersistentVolumeClaim that holds it"
            )
        return self

    @property
    def model_name(self) -> str:
        """Name of the model in the MLflow registry."""
        return self.registered_model or self.name

    @property
    def estimator_class(self) -> str:
        """Import path of the estimator, with the task's default filled in."""
        return self.estimator.class_path or DEFAULT_ESTIMATORS[self.task]

    @property
    def numeric_features(self) -> list[str]:
        """Features treated as numbers by the preprocessing pipeline."""
        return [f for f in self.features if self.schema_.columns[f] in NUMERIC_TYPES]

    @property
    def categorical_features(self) -> list[str]:
        """Features the preprocessing pipeline encodes as categories (one-hot, or codes for xgboost)."""
        return [f for f in self.features if self.schema_.columns[f] in CATEGORICAL_TYPES]


def expand_env(value: Any) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML document.

    Args:
        value: A parsed YAML value (mapping, list or scalar).

    Returns:
        The same structure with environment variables substituted.

    Raises:
        ConfigError: A referenced variable is unset and has no default.
    """
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if not isinstance(value, str):
        return value

    def _substitute(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set and has no default")

    return _ENV_PATTERN.sub(_substitute, value)


def _resolve_local_root(root_uri: str, base_dir: Path) -> str:
    if "://" in root_uri:
        return root_uri
    path = Path(root_uri).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {location}: {item['msg']}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], base_dir: Path, source: str = "<config>") -> ProjectConfig:
    """Validate a parsed configuration mapping.

    Args:
        raw: The YAML document as a mapping.
        base_dir: Folder that relative local paths are resolved against.
        source: Name of the document, used in error messages.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The document is invalid; the message names every bad field.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    expanded = expand_env(raw)
    try:
        config = ProjectConfig.model_validate(expanded)
    except ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{_format_errors(error)}") from None
    root = _resolve_local_root(config.data.root_uri, base_dir)
    return config.model_copy(update={"data": config.data.model_copy(update={"root_uri": root})})


class ProjectSnapshot(BaseModel):
    """A project file resolved once for a run (environment variables, relative paths): every task of the run
    uses this snapshot, so a run never mixes two versions of the file, whichever machine a task runs on.

    Attributes:
        config: The resolved project.
        source: The file it was read from.
        sha256: Hash of the resolved configuration (recorded with the cycle).
        resolved_at: When it was read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: ProjectConfig
    source: str
    sha256: str
    resolved_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The JSON-safe form (what goes to XCom)."""
        return self.model_dump(mode="json", by_alias=True)


def snapshot_project(path: str | Path) -> ProjectSnapshot:
    """Resolve a project file now, for one run.

    Raises:
        ConfigError: The file is missing or invalid.
    """
    import hashlib
    import json

    config = load_config(path)
    text = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return ProjectSnapshot(
        config=config,
        source=str(path),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        resolved_at=datetime.now(UTC).replace(microsecond=0),
    )


def project_from_json(raw: str | dict[str, Any], source: str = "<resolved project>") -> ProjectConfig:
    """A project that was already resolved (a snapshot's, a trainer's ``RETRAINER_CONFIG_JSON``), validated
    again but not resolved again: its values are used as they are.

    Raises:
        ConfigError: It is not a valid project.
    """
    import json

    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        return ProjectConfig.model_validate(data)
    except ValueError as error:
        details = _format_errors(error) if isinstance(error, ValidationError) else f"  {error}"
        raise ConfigError(f"{source} is invalid:\n{details}") from None


def load_config(path: str | Path) -> ProjectConfig:
    """Load and validate a project configuration file.

    Relative local paths in the file are resolved against the file's folder.

    Args:
        path: Path of the YAML file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file is missing, is not YAML, or is invalid (the message names the field).
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"project config {file} does not exist")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{file} is not valid YAML: {error}") from None
    return parse_config(raw, file.parent.resolve(), source=str(file))
