"""The steps of a retraining cycle: ingest, validate, drift, train, evaluate, promote, record.

Each step is a function in its own module. It takes a project configuration, the MLflow server it may talk
to (a :class:`retrainer.tracking.Tracking`, passed explicitly) and small values (batch ids, run ids,
timestamps), and returns a small typed result (a pydantic model), so that the same function serves the CLI,
an Airflow task (through XCom, as the model's JSON) and a plain Python loop. Data moves through the batch
store and MLflow, never through return values.
"""

from retrainer.steps.approval import Approval, ApprovalRequest, approval_request
from retrainer.steps.candidate import TrainingResult, train, training_window, untrained_batches
from retrainer.steps.common import (
    CHALLENGER,
    CHAMPION,
    TAG,
    BatchRejectedError,
    NothingToTrainError,
    StepResult,
    champion_version,
    code_version,
    load_model,
    parse_cutoff,
    safe_id,
)
from retrainer.steps.concept import ConceptCheck, ConceptDriftResult, concept_drift
from retrainer.steps.cycle import run_cycle
from retrainer.steps.data_drift import DriftOutcome, drift
from retrainer.steps.evaluation import Evaluation, evaluate
from retrainer.steps.eviction import Eviction, evict
from retrainer.steps.gating import GateOutcome, gate_alerts
from retrainer.steps.ingestion import IngestResult, ingest
from retrainer.steps.records import (
    CycleParts,
    CycleRecord,
    CycleRow,
    amend_cycle_decision,
    cycle_table,
    error_of,
    record_cycle,
)
from retrainer.steps.registry import DecisionRecord, alias_history, conclude_approval, promote
from retrainer.steps.rollback import RollbackResult, read_rollbacks, rollback
from retrainer.steps.serving import ServingCheck, serving_check, serving_check_of_run
from retrainer.steps.shadow import ShadowOutcome, shadow_evaluation
from retrainer.steps.validation import ValidationResult, validate

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "TAG",
    "Approval",
    "ApprovalRequest",
    "BatchRejectedError",
    "ConceptCheck",
    "ConceptDriftResult",
    "CycleParts",
    "CycleRecord",
    "CycleRow",
    "DecisionRecord",
    "DriftOutcome",
    "Evaluation",
    "Eviction",
    "GateOutcome",
    "IngestResult",
    "NothingToTrainError",
    "RollbackResult",
    "ServingCheck",
    "ShadowOutcome",
    "StepResult",
    "TrainingResult",
    "ValidationResult",
    "alias_history",
    "amend_cycle_decision",
    "approval_request",
    "champion_version",
    "code_version",
    "concept_drift",
    "conclude_approval",
    "cycle_table",
    "drift",
    "error_of",
    "evaluate",
    "evict",
    "gate_alerts",
    "ingest",
    "load_model",
    "parse_cutoff",
    "promote",
    "read_rollbacks",
    "record_cycle",
    "rollback",
    "run_cycle",
    "safe_id",
    "serving_check",
    "serving_check_of_run",
    "shadow_evaluation",
    "train",
    "training_window",
    "untrained_batches",
    "validate",
]
