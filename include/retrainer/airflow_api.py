"""A small typed client of the Airflow 3 REST API (``/api/v2``), without importing Airflow.

It logs in with ``POST /auth/token`` (the simple auth manager's user and password) and sends the token as a
bearer token; when the token expires (HTTP 401) it logs in again once. Transient failures are retried with
backoff: a connection refused or timed out for every call, a read timeout or a 502/503/504 answer for reads
only (a write may have happened).

Example:
    >>> client = AirflowClient("http://127.0.0.1:8080", "admin", password)  # doctest: +SKIP
    >>> client.wait_until_dag_parsed("retrain", timeout=120)  # doctest: +SKIP
    >>> client.unpause("retrain")  # doctest: +SKIP
    >>> run_id = client.trigger("retrain", conf={"project": "flights"})  # doctest: +SKIP
    >>> client.wait_for_dag_runs("retrain", count=1, timeout=600)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Literal

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

TERMINAL_STATES = frozenset({"success", "failed"})
TASK_FINAL_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
log = logging.getLogger(__name__)
_PAGE = 100  # Airflow's default [api] maximum_page_limit
_UNAVAILABLE = frozenset({502, 503, 504})
TIMEOUT_HINT = "on a slow machine raise the HTTP timeout (make run HTTP_TIMEOUT=120, or --http-timeout 120)"


class AirflowApiError(RuntimeError):
    """An Airflow API call failed or a wait ran out of time.

    Attributes:
        status_code: HTTP status of the failed call, None for a timeout or a connection error.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AirflowWaitTimeout(AirflowApiError):
    """A wait on Airflow (a DAG parsed, runs or a task finished) ran out of time."""


def _iso(value: str | date | datetime) -> str:
    """An ISO 8601 timestamp with a time zone (Airflow rejects naive ones); dates become midnight UTC."""
    if isinstance(value, datetime):
        return value.isoformat() if value.tzinfo else value.isoformat() + "Z"
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    text = value.strip()
    if len(text) == 10:  # YYYY-MM-DD
        return f"{text}T00:00:00Z"
    return text


def _database_locked(error: BaseException) -> bool:
    """Airflow on SQLite refuses a backfill with 503 while another writer holds the database: try again."""
    return isinstance(error, AirflowApiError) and error.status_code == 503 and "locked" in str(error).lower()


def _sort_key(run: dict[str, Any]) -> str:
    return run.get("logical_date") or run.get("run_after") or ""


class AirflowClient:
    """Client of one Airflow API server.

    Args:
        base_url: Server URL without the ``/api/v2`` suffix, e.g. ``http://127.0.0.1:8080``.
        username: User of the simple auth manager.
        password: That user's password.
        timeout: Seconds per HTTP request.
        poll_interval: Seconds between polls of the ``wait_*`` methods.
        attempts: Tries of a call that fails transiently, with exponential backoff between them.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        poll_interval: float = 2.0,
        attempts: int = 5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.attempts = attempts
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        """Close the underlying HTTP connections."""
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------------------------
    # Transport

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, tried again while it fails transiently (see the module's docstring)."""
        reads = method in ("GET", "HEAD")

        def transient(error: BaseException) -> bool:
            if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                return True  # the request never reached the server
            return reads and isinstance(error, httpx.TransportError)

        def note(state: RetryCallState) -> None:
            outcome = state.outcome
            why = outcome.exception() if outcome and outcome.failed else f"HTTP {outcome.result().status_code}"
            log.warning(
                "%s %s%s: %s; trying again (attempt %d)",
                method,
                self.base_url,
                path,
                why,
                state.attempt_number + 1,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception(transient)
            | retry_if_result(lambda r: reads and r.status_code in _UNAVAILABLE),
            before_sleep=note,
            retry_error_callback=lambda state: state.outcome.result(),  # the last answer, or its error
            reraise=True,
        )
        try:
            return retrying(self._http.request, method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise AirflowApiError(
                f"{method} {self.base_url}{path} timed out after {self.timeout:g} s ({error}): {TIMEOUT_HINT}"
            ) from error

    def _login(self) -> str:
        try:
            response = self._send(
                "POST", "/auth/token", json={"username": self.username, "password": self._password}
            )
        except httpx.HTTPError as error:
            raise AirflowApiError(f"cannot reach Airflow at {self.base_url}: {error}") from error
        if response.status_code not in (200, 201):
            raise AirflowApiError(
                f"login as {self.username!r} at {self.base_url}/auth/token failed: "
                f"HTTP {response.status_code} {response.text}",
                response.status_code,
            )
        token = response.json().get("access_token")
        if not token:
            raise AirflowApiError(f"login at {self.base_url}/auth/token returned no access_token")
        self._token = token
        return token

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        token = self._token or self._login()
        for attempt in range(2):
            try:
                response = self._send(
                    method, path, json=json, params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as error:
                raise AirflowApiError(f"{method} {self.base_url}{path} failed: {error}") from error
            if response.status_code == 401 and attempt == 0:
                token = self._login()
                continue
            if response.status_code not in ok:
                raise AirflowApiError(
                    f"{method} {self.base_url}{path} answered HTTP {response.status_code}: {response.text}",
                    response.status_code,
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._request("GET", path, params=params).json()

    def _paged(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._get_json(path, {**(params or {}), "limit": _PAGE, "offset": len(items)})
            batch = list(page.get(key) or [])
            items.extend(batch)
            total = page.get("total_entries")
            if not batch or (total is not None and len(items) >= total):
                return items

    # ----------------------------------------------------------------------------------------------------------
    # DAGs

    def health(self) -> dict[str, Any]:
        """The body of ``GET /api/v2/monitor/health`` (needs no login)."""
        try:
            response = self._http.get("/api/v2/monitor/health")
        except httpx.HTTPError as error:
            raise AirflowApiError(f"cannot reach Airflow at {self.base_url}: {error}") from error
        if response.status_code != 200:
            raise AirflowApiError(
                f"GET /api/v2/monitor/health answered HTTP {response.status_code}: {response.text}",
                response.status_code,
            )
        return response.json()

    def ensure_pool(self, name: str, slots: int, description: str = "") -> dict[str, Any]:
        """Create a pool, or set its slots and description when it exists (``airflow pools import`` does the same).

        Returns:
            The pool's record.
        """
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        response = self._request("POST", "/api/v2/pools", json=body, ok=(200, 201, 409))
        if response.status_code != 409:
            return response.json()
        update = {"pool": name, "slots": slots, "description": description, "include_deferred": False}
        return self._request("PATCH", f"/api/v2/pools/{name}", json=update).json()

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG's record, or None when the DAG processor has not stored it (yet).

        Args:
            dag_id: DAG id.

        Returns:
            The ``GET /api/v2/dags/{dag_id}`` body, or None on HTTP 404.
        """
        response = self._request("GET", f"/api/v2/dags/{dag_id}", ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def import_errors(self) -> list[dict[str, Any]]:
        """Current DAG import errors: dicts with ``filename``, ``stack_trace``, ``timestamp``."""
        return self._paged("/api/v2/importErrors", "import_errors")

    def wait_until_dag_parsed(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed and stored the DAG.

        Args:
            dag_id: DAG id.
            timeout: Seconds to wait.

        Returns:
            The DAG's record.

        Raises:
            AirflowApiError: The DAG did not appear in time; the message lists the current import errors.
        """
        deadline = time.monotonic() + timeout
        while True:
            dag = self.get_dag(dag_id)
            if dag is not None:
                return dag
            if time.monotonic() > deadline:
                errors = self.import_errors()
                details = (
                    "\n".join(f"--- {e.get('filename')}:\n{e.get('stack_trace', '').strip()}" for e in errors)
                    if errors
                    else "no import errors reported"
                )
                raise AirflowWaitTimeout(f"DAG {dag_id!r} was not parsed within {timeout:.0f} s; {details}")
            time.sleep(self.poll_interval)

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        """Pause or unpause a DAG.

        Args:
            dag_id: DAG id.
            paused: True to pause.

        Returns:
            The updated DAG record.
        """
        return self._request(
            "PATCH", f"/api/v2/dags/{dag_id}", params={"update_mask": "is_paused"}, json={"is_paused": paused}
        ).json()

    def unpause(self, dag_id: str) -> dict[str, Any]:
        """Unpause a DAG so that the scheduler runs it.

        Args:
            dag_id: DAG id.

        Returns:
            The updated DAG record.
        """
        return self.set_paused(dag_id, False)

    # ----------------------------------------------------------------------------------------------------------
    # Runs

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        logical_date: str | date | datetime | None = None,
        dag_run_id: str | None = None,
    ) -> str:
        """Trigger a DAG run.

        Args:
            dag_id: DAG id.
            conf: Run configuration (``dag_run.conf``, overrides params).
            logical_date: Logical date of the run; None for a run without one (Airflow 3's default for
                manual runs). Dates and naive datetimes are taken as UTC.
            dag_run_id: Run id; Airflow generates one when None.

        Returns:
            The run id.
        """
        body: dict[str, Any] = {
            "logical_date": _iso(logical_date) if logical_date is not None else None,
            "conf": conf or {},
        }
        if dag_run_id:
            body["dag_run_id"] = dag_run_id
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"]

    @retry(
        retry=retry_if_exception(_database_locked),
        stop=stop_after_attempt(6),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def create_backfill(
        self,
        dag_id: str,
        from_date: str | date | datetime,
        to_date: str | date | datetime,
        max_active_runs: int = 1,
        reprocess_behavior: Literal["none", "failed", "completed"] = "none",
        dag_run_conf: dict[str, Any] | None = None,
        run_backwards: bool = False,
    ) -> int:
        """Create a backfill: one run per schedule interval whose logical date lies in the range.

        The runs are created at once but stay queued while the DAG is paused (Airflow 3.3): unpause it. Unpausing
        a DAG with ``catchup=False`` also creates one scheduled run for the latest interval; filter the runs by
        ``run_type="backfill"`` when counting.

        Args:
            dag_id: DAG id; it needs a time-based schedule.
            from_date: First logical date (inclusive); dates are taken as midnight UTC.
            to_date: Last logical date (inclusive).
            max_active_runs: Runs of the backfill that may run at once.
            reprocess_behavior: What to do with dates that already have a run: ``none`` (skip them),
                ``failed`` (rerun failed ones) or ``completed`` (rerun all).
            dag_run_conf: Configuration of every run.
            run_backwards: Create the newest run first.

        Returns:
            The backfill id.

        Raises:
            AirflowApiError: Airflow refused; a database locked by another writer (SQLite) is retried first.
        """
        body = {
            "dag_id": dag_id,
            "from_date": _iso(from_date),
            "to_date": _iso(to_date),
            "run_backwards": run_backwards,
            "dag_run_conf": dag_run_conf or {},
            "reprocess_behavior": reprocess_behavior,
            "max_active_runs": max_active_runs,
        }
        return int(self._request("POST", "/api/v2/backfills", json=body).json()["id"])

    def get_backfill(self, backfill_id: int) -> dict[str, Any]:
        """The backfill's record (``completed_at`` is set once all its runs finished)."""
        return self._get_json(f"/api/v2/backfills/{backfill_id}")

    def list_dag_runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        """All runs of a DAG, oldest logical date first.

        Args:
            dag_id: DAG id.
            run_type: Only runs of this type (``manual``, ``scheduled``, ``backfill``, ``asset_triggered``).

        Returns:
            Run records (``dag_run_id``, ``state``, ``logical_date``, ``run_type``, ``conf``, ...).
        """
        runs = self._paged(f"/api/v2/dags/{dag_id}/dagRuns", "dag_runs")
        if run_type is not None:
            runs = [run for run in runs if run.get("run_type") == run_type]
        return sorted(runs, key=_sort_key)

    def get_dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One run's record."""
        return self._get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def extra_links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """A task instance's extra links, by name (None: the link has nothing to open)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        return dict(self._get_json(path).get("extra_links") or {})

    def get_page(self, path: str, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        """GET any path of the API server as the signed-in user (a plugin's page, a report it serves)."""
        return self._request("GET", path, ok=ok)

    def set_run_note(self, dag_id: str, run_id: str, note: str) -> dict[str, Any]:
        """Replace a run's note (Markdown, shown on the run's page); returns the run's record."""
        return self._request(
            "PATCH",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}",
            params={"update_mask": "note"},
            json={"note": note},
        ).json()

    def wait_for_dag_runs(
        self,
        dag_id: str,
        count: int = 1,
        timeout: float = 600.0,
        run_type: str | None = None,
        on_finished: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` runs of the DAG have finished (``success`` or ``failed``).

        Args:
            dag_id: DAG id.
            count: Number of finished runs to wait for.
            timeout: Seconds to wait.
            run_type: Only count runs of this type (e.g. ``backfill``).
            on_finished: Called once with each run as it is first seen finished (for progress output).

        Returns:
            The finished runs, oldest logical date first.

        Raises:
            AirflowApiError: Fewer runs finished in time; the message lists the states seen.
        """
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while True:
            runs = self.list_dag_runs(dag_id, run_type=run_type)
            finished = [run for run in runs if run.get("state") in TERMINAL_STATES]
            for run in finished:
                if on_finished is not None and run["dag_run_id"] not in seen:
                    on_finished(run)
                seen.add(run["dag_run_id"])
            if len(finished) >= count:
                return finished
            if time.monotonic() > deadline:
                states = ", ".join(f"{run.get('dag_run_id')}={run.get('state')}" for run in runs) or "no runs"
                raise AirflowWaitTimeout(
                    f"only {len(finished)} of {count} runs of {dag_id!r} finished "
                    f"within {timeout:.0f} s ({states})"
                )
            time.sleep(self.poll_interval)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Task instances of one run.

        Args:
            dag_id: DAG id.
            run_id: Run id.

        Returns:
            Task instance records (``task_id``, ``state``, ``try_number``, ``start_date``, ...).
        """
        return self._paged(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The value of one XCom (a task's return value by default) as stored: JSON for plain values.

        Returns:
            The value, or None when the task pushed none (it was skipped, failed or has not run).

        Raises:
            AirflowApiError: The request failed, or the run or task does not exist.
        """
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        try:
            return self._get_json(path).get("value")
        except AirflowApiError as error:
            if error.status_code == 404 and "XCom entry" in str(error):
                return None
            raise

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The text of one task try's log (what the Airflow UI shows)."""
        return "\n".join(_log_line(item) for item in self.task_log_entries(dag_id, run_id, task_id, try_number))

    def task_log_entries(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> list[Any]:
        """One task try's log as Airflow keeps it: structured entries (``event``, ``level``, ``logger``...), or
        lines of text where the log is not structured."""
        body = self._get_json(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
        )
        content = body.get("content", "")
        return content if isinstance(content, list) else str(content).splitlines()

    def wait_for_dag_run(self, dag_id: str, run_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Wait until one run is ``success`` or ``failed`` and return it.

        Raises:
            AirflowApiError: The run did not finish in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_dag_run(dag_id, run_id)
            if run.get("state") in TERMINAL_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowWaitTimeout(
                    f"run {run_id} of {dag_id!r} still {run.get('state')} after {timeout:.0f} s"
                )
            time.sleep(self.poll_interval)

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 600.0
    ) -> dict[str, Any]:
        """Wait until one task instance is in one of ``states`` (e.g. ``awaiting_input``) and return it.

        Raises:
            AirflowApiError: The task did not get there in time, or its run finished first.
        """
        deadline = time.monotonic() + timeout
        while True:
            task = self._get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            if task.get("state") in states:
                return task
            if time.monotonic() > deadline:
                raise AirflowWaitTimeout(
                    f"task {task_id} of run {run_id} still {task.get('state')} after {timeout:.0f} s"
                )
            if self.get_dag_run(dag_id, run_id).get("state") in TERMINAL_STATES:
                raise AirflowApiError(f"run {run_id} of {dag_id!r} finished with {task_id} {task.get('state')}")
            time.sleep(self.poll_interval)

    def respond(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen_options: list[str],
        params_input: dict[str, Any] | None = None,
        map_index: int = -1,
        timeout: float = 300.0,
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop task (what the UI's *Required actions* form does), as this user, and
        wait until the task has taken the answer (it left ``awaiting_input`` for a final state).

        An answer that lands within a scheduler loop of the request can be lost in Airflow 3.3: the scheduler
        queues the resumed task before it has seen the waiting try's process exit, takes that exit for an
        external state change and retries the task, which asks again and erases the answer. The same answer
        is then given to the new request.

        Raises:
            AirflowApiError: The task awaits no answer, was answered already (409), the option is invalid,
                or the task did not finish within ``timeout``.
        """
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        answer = {"chosen_options": chosen_options, "params_input": params_input or {}}
        answered_try = int(self._get_json(path).get("try_number") or 0)
        response = self._request("PATCH", f"{path}/{map_index}/hitlDetails", json=answer).json()
        deadline = time.monotonic() + timeout
        while True:
            task = self._get_json(path)
            state, try_number = task.get("state"), int(task.get("try_number") or 0)
            if state in TASK_FINAL_STATES:
                return response
            if state == "awaiting_input" and try_number > answered_try:
                log.warning("%s.%s of %s asked again (try %s)", dag_id, task_id, run_id, try_number)
                answered_try = try_number
                response = self._request("PATCH", f"{path}/{map_index}/hitlDetails", json=answer).json()
            if time.monotonic() > deadline:
                raise AirflowWaitTimeout(
                    f"{task_id} of run {run_id} still {state} {timeout:.0f} s after the answer"
                )
            time.sleep(self.poll_interval)

    def asset_id(self, uri: str) -> int:
        """The id of the asset with this URI (asset events are posted by id).

        Raises:
            AirflowApiError: No asset has that URI (its DAG is not parsed yet, or the URI is wrong).
        """
        assets = self._paged("/api/v2/assets", "assets", params={"uri_pattern": uri})
        for asset in assets:
            if asset.get("uri") == uri:
                return int(asset["id"])
        raise AirflowApiError(f"Airflow has no asset with URI {uri!r} (is its DAG parsed?)")

    def create_asset_event(self, uri: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Post an event on an asset, which starts the DAGs scheduled on it."""
        body = {"asset_id": self.asset_id(uri), "extra": extra or {}}
        return self._request("POST", "/api/v2/assets/events", json=body).json()


def _log_line(item: Any) -> str:
    """One structured log entry as the UI shows it: the event, and the exception of a failed task."""
    if not isinstance(item, dict):
        return str(item)
    lines = [str(item.get("event", ""))]
    for error in item.get("error_detail") or []:
        if isinstance(error, dict):
            lines.append(f"{error.get('exc_type', 'Error')}: {error.get('exc_value', '')}")
    return "\n".join(lines)
