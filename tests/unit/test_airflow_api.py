"""The Airflow REST client against a scripted transport (the real server is in tests/integration)."""

from __future__ import annotations

import httpx
import pytest

from retrainer.airflow_api import AirflowApiError, AirflowClient, AirflowWaitTimeout

LOCKED = {"detail": "Database is locked. Backfill creation is not supported on SQLite under concurrent access."}


def _client(answers: list[tuple[int, dict]]) -> tuple[AirflowClient, list[str]]:
    """A client whose API calls get ``answers`` in turn; returns it and the list of calls made."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        calls.append(request.url.path)
        status, body = answers[min(len(calls), len(answers)) - 1]
        return httpx.Response(status, json=body)

    client = AirflowClient("http://airflow", "admin", "pw")
    client._http = httpx.Client(base_url="http://airflow", transport=httpx.MockTransport(handle))
    return client, calls


def test_a_backfill_refused_because_sqlite_is_locked_is_retried() -> None:
    client, calls = _client([(503, LOCKED), (503, LOCKED), (200, {"id": 7})])
    assert client.create_backfill("retrain_x", "2013-01-14", "2013-01-21") == 7
    assert calls == ["/api/v2/backfills"] * 3


def test_other_refusals_of_a_backfill_fail_at_once() -> None:
    client, calls = _client([(409, {"detail": "a backfill is already running"})])
    with pytest.raises(AirflowApiError, match="409") as raised:
        client.create_backfill("retrain_x", "2013-01-14", "2013-01-21")
    assert raised.value.status_code == 409 and len(calls) == 1


def test_a_task_that_pushed_no_xcom_reads_as_none_but_an_unknown_run_fails() -> None:
    client, _ = _client([(404, {"detail": "XCom entry with key: `return_value` not found"})])
    assert client.xcom("retrain_x", "run_1", "train") is None
    unknown_run = {"detail": "The DagRun with dag_id: `retrain_x` and run_id: `nope` was not found"}
    client, _ = _client([(404, unknown_run)])
    with pytest.raises(AirflowApiError, match="404"):
        client.xcom("retrain_x", "nope", "train")


def test_a_pool_that_exists_is_updated_with_the_whole_body_the_api_wants() -> None:
    bodies: list[tuple[str, dict]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        import json

        bodies.append((request.method, json.loads(request.content)))
        if request.method == "POST":
            return httpx.Response(409, json={"detail": "exists"})
        return httpx.Response(200, json={"name": "retrainer_x", "slots": 1})

    client = AirflowClient("http://airflow", "admin", "pw")
    client._http = httpx.Client(base_url="http://airflow", transport=httpx.MockTransport(handle))
    assert client.ensure_pool("retrainer_x", 1, "data steps of x")["slots"] == 1
    assert bodies[1] == (
        "PATCH",
        {"pool": "retrainer_x", "slots": 1, "description": "data steps of x", "include_deferred": False},
    )


def test_an_answer_erased_by_airflow_retrying_the_task_is_given_again() -> None:
    """Airflow 3.3 can retry a task answered within a scheduler loop: the new request gets the same answer."""
    client, calls = _client(
        [
            (200, {"state": "awaiting_input", "try_number": 1}),  # before the answer
            (200, {"chosen_options": ["Approve"]}),
            (200, {"state": "up_for_retry", "try_number": 1}),
            (200, {"state": "awaiting_input", "try_number": 2}),  # asked again: the answer was erased
            (200, {"chosen_options": ["Approve"]}),
            (200, {"state": "running", "try_number": 2}),
            (200, {"state": "success", "try_number": 2}),
        ]
    )
    client.poll_interval = 0
    assert client.respond("retrain_x", "run_1", "approve", ["Approve"]) == {"chosen_options": ["Approve"]}
    task, answer = "/api/v2/dags/retrain_x/dagRuns/run_1/taskInstances/approve", "/-1/hitlDetails"
    assert calls == [task, task + answer, task, task, task + answer, task, task]


def test_an_answer_the_task_never_takes_fails_after_the_timeout() -> None:
    waiting = {"state": "awaiting_input", "try_number": 1}
    client, _ = _client([(200, waiting), (200, {}), (200, {"state": "queued"})])
    client.poll_interval = 0
    with pytest.raises(AirflowWaitTimeout, match="approve of run run_1 still queued"):
        client.respond("retrain_x", "run_1", "approve", ["Approve"], timeout=0.05)


def _flaky(failures: list[Exception | int]) -> tuple[AirflowClient, list[str]]:
    """A client whose calls first meet ``failures`` (an exception raised, or an HTTP status), then succeed."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        calls.append(request.method)
        if len(calls) <= len(failures):
            failure = failures[len(calls) - 1]
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, json={"detail": "busy"})
        return httpx.Response(200, json={"dag_run_id": "r1", "dags": []})

    client = AirflowClient("http://airflow", "admin", "pw", attempts=3)
    client._http = httpx.Client(base_url="http://airflow", transport=httpx.MockTransport(handle))
    return client, calls


def test_a_read_is_tried_again_after_a_refused_connection_a_read_timeout_and_a_503() -> None:
    refused, slow = httpx.ConnectError("refused"), httpx.ReadTimeout("slow")
    for failure in (refused, slow, 503):
        client, calls = _flaky([failure, failure])
        assert client._get_json("/api/v2/dags") == {"dag_run_id": "r1", "dags": []}
        assert calls == ["GET"] * 3, failure


def test_a_write_is_tried_again_only_when_it_never_reached_the_server() -> None:
    client, calls = _flaky([httpx.ConnectError("refused")])
    assert client.trigger("d") == "r1" and calls == ["POST", "POST"]
    client, calls = _flaky([503])  # it may have happened: no second run
    with pytest.raises(AirflowApiError, match="HTTP 503"):
        client.trigger("d")
    assert calls == ["POST"]
    client, calls = _flaky([httpx.ReadTimeout("slow")])
    with pytest.raises(AirflowApiError, match=r"timed out after 30 s .*make run HTTP_TIMEOUT="):
        client.trigger("d")
    assert calls == ["POST"]


def test_a_read_that_keeps_failing_gives_up_after_its_attempts_naming_the_setting() -> None:
    client, calls = _flaky([httpx.ReadTimeout("slow")] * 5)
    with pytest.raises(AirflowApiError, match=r"GET http://airflow/api/v2/dags timed out .*HTTP_TIMEOUT"):
        client._get_json("/api/v2/dags")
    assert calls == ["GET"] * 3


def test_a_wait_that_runs_out_says_which_make_setting_gives_it_more() -> None:
    from retrainer.cli import _with_wait_hint

    waited = AirflowWaitTimeout("no new run of 'retrain' within 900 s")
    assert _with_wait_hint(waited, "DRIFT_TIMEOUT", "--timeout").endswith(
        "(on a slow machine wait longer: make run DRIFT_TIMEOUT=..., or --timeout)"
    )
    refused = AirflowApiError("POST /api/v2/dags/x/dagRuns answered HTTP 409", 409)
    assert _with_wait_hint(refused, "DRIFT_TIMEOUT", "--timeout") == str(refused)
