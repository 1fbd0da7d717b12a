"""The reviewer's step before ``@champion`` moves (``promotion.approval: required``).

A human-in-the-loop task of Airflow 3's standard provider: the run waits in the Airflow UI ("Required actions")
with the gate's decision, its intervals and links to the model version and its card in MLflow; the reviewer
approves or rejects, and may leave a comment. Without an answer within the project's timeout the scheduler
applies the default, reject. The task returns the answer as :class:`retrainer.steps.Approval`; the next task
(``conclude_approval``) applies it under the alias lease.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowSkipException

from retrainer.steps.approval import APPROVE, REJECT, Approval

if TYPE_CHECKING:
    from airflow.sdk import Context

    from retrainer.config import ProjectConfig


class PromotionApprovalOperator(HITLOperator):
    """Ask a reviewer to approve the promotion decided by ``decision_task_id``; skip when none is awaited.

    Args:
        project: The project (its ``promotion.approval_timeout_minutes``).
        decision_task_id: The task whose XCom is the :class:`~retrainer.steps.DecisionRecord`.
        mlflow_conn_id: The MLflow connection; its URL is linked unless ``RETRAINER_MLFLOW_UI_URL`` names
            the UI reviewers reach.
    """

    def __init__(
        self,
        *,
        project: ProjectConfig,
        decision_task_id: str = "promote",
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("params", None)  # the DAG's params: the reviewer's form has only the comment
        super().__init__(
            subject=f"Promote a new version of {project.model_name}?",
            options=[APPROVE, REJECT],
            defaults=[REJECT],
            multiple=False,
            response_timeout=timedelta(minutes=project.promotion.approval_timeout_minutes),
            params={"comment": Param("", type="string", description="Recorded with your answer.")},
            **kwargs,
        )
        self.project = project
        self.decision_task_id = decision_task_id
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> Any:
        from retrainer.steps import DecisionRecord, approval_request

        raw = context["ti"].xcom_pull(task_ids=self.decision_task_id)
        if raw is None:
            raise AirflowSkipException(f"{self.decision_task_id} returned no decision")
        record = DecisionRecord.model_validate(raw)
        if not record.awaiting_approval:
            raise AirflowSkipException(f"nothing to approve: {record.state}: {record.reason}")
        request = approval_request(self.project, record, self._mlflow_ui())
        self.subject, self.body = request.subject, request.body
        self.log.info("awaiting approval: %s\n%s", request.subject, request.body)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        answer = super().execute_complete(context, event)
        user = answer.get("responded_by_user") or {}
        approval = Approval(
            approved=answer["chosen_options"] == [APPROVE],
            by=user.get("name") or user.get("id") or None,
            at=answer["responded_at"],
            timed_out=bool(event.get("timedout")) or not user,
            comment=str((answer.get("params_input") or {}).get("comment") or ""),
        )
        self.log.info("answer: %s", approval.text(self.project.promotion.approval_timeout_minutes))
        return approval.model_dump(mode="json")

    def on_kill(self) -> None:
        """Nothing runs while the task awaits input; the alias moves only in the next task."""

    def _mlflow_ui(self) -> str | None:
        from retrainer_provider.hooks.airflow_api import ui_links

        return ui_links(self.mlflow_conn_id).mlflow or None
