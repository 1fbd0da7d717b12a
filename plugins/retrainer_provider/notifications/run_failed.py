"""An e-mail when a run of a project's DAG fails, through an Airflow SMTP connection."""

from __future__ import annotations

from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

SUBJECT = "[retrainer] {{ dag.dag_id }}: run {{ run_id }} failed"
BODY = (
    "<p>The run <b>{{ run_id }}</b> of <b>{{ dag.dag_id }}</b> failed"
    "{% if ti is defined and ti %} at the task <b>{{ ti.task_id }}</b>{% endif %}"
    "{% if reason %} ({{ reason }}){% endif %}.</p>"
    "<p>Nothing was promoted by this run; the champion is unchanged unless its log says otherwise.</p>"
    '<p><a href="{{ run_url }}">Open the run in Airflow</a> ({{ run_url }}): the failed task\'s log says '
    "what happened.</p>"
)


def run_url(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI (``[api] base_url``)."""
    from urllib.parse import quote

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id)}/runs/{quote(run_id)}"


class RunFailedNotifier(SmtpNotifier):
    """Sends one e-mail per failed run (a DAG-level ``on_failure_callback``, run by the dag-processor).

    Args:
        to: The addresses (the project's ``notifications.on_failure``).
        smtp_conn_id: The SMTP server's Airflow connection.
        from_email: Sender; default: the connection's ``from_email`` extra.
    """

    def __init__(self, *, to: list[str], smtp_conn_id: str, from_email: str | None = None, **kwargs: Any) -> None:
        super().__init__(
            to=to, from_email=from_email, smtp_conn_id=smtp_conn_id, subject=SUBJECT, html_content=BODY, **kwargs
        )

    def __call__(self, *args: Any) -> None:
        context = args[0] if args else None
        if isinstance(context, dict):
            dag = context.get("dag")
            context.setdefault("run_url", run_url(getattr(dag, "dag_id", ""), str(context.get("run_id", ""))))
        super().__call__(*args)
