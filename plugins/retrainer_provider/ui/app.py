"""The model pages, served by Airflow's API server under ``/retrainer`` (see ``plugins/retrainer_ui.py``).

- ``/retrainer/`` lists the projects the user may see, with their champion.
- ``/retrainer/models/<project>`` is a model's whole life (:mod:`retrainer.timeline`); ``.../timeline.json`` the
  same as JSON.
- ``/retrainer/models/<project>/files/<path>`` serves the reports the timeline links to (Evidently, Data Docs,
  quarantine reports) from the project's data root, wherever it is (a folder or S3), so that a browser can open
  them.
- ``/retrainer/dags/<dag_id>`` redirects a project's DAG to its model page (the DAG's "Model" tab).

Every page is behind Airflow's own login (the ``_token`` cookie of the UI, or a bearer token) and shows a project
only to users who may read its retraining DAG.
"""

from __future__ import annotations

import mimetypes
from functools import cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

if TYPE_CHECKING:
    from jinja2 import Environment

    from retrainer.config import ProjectConfig

TEMPLATES = Path(__file__).parent / "templates"
# What the files route serves: reports and their assets, never the batches' data.
SERVED_FOLDERS = ("reports", "quarantine")
SERVED_SUFFIXES = {".html", ".json", ".css", ".js", ".png", ".jpg", ".svg", ".ico", ".woff", ".woff2", ".ttf"}
DAG_PREFIXES = ("retrain_", "monitor_", "rollback_")


def served_parts(path: str) -> tuple[str, ...] | None:
    """The parts of ``path`` if the files route may serve it: a report under ``reports/`` or ``quarantine/``
    (never a batch's data, nothing outside the data root); None otherwise."""
    pure = PurePosixPath(path)
    parts = pure.parts
    if not parts or parts[0] not in SERVED_FOLDERS or any(p in ("..", ".", "") for p in parts):
        return None
    return parts if pure.suffix.lower() in SERVED_SUFFIXES else None


async def _user(request: Request) -> Any:
    """The signed-in Airflow user (dependency), or 401."""
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get("_token")
    return await resolve_user_from_token(token)


User = Annotated[Any, Depends(_user)]


def _may_read(user: Any, project: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    from retrainer.timeline import dag_id_of

    return get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id_of(project)), user=user)


def _projects() -> dict[str, ProjectConfig]:
    from retrainer.projects import projects_dir, scan_projects

    return {project.name: project for _, project in scan_projects(projects_dir()).valid}


def _project(user: Any, name: str) -> ProjectConfig:
    project = _projects().get(name)
    if project is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no project {name!r} (its file is missing or invalid)")
    if not _may_read(user, name):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may not read the DAGs of project {name!r}")
    return project


@cache
def _templates() -> Environment:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from retrainer_provider.ui.charts import line_chart

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.globals["line_chart"] = line_chart
    env.filters["when"] = lambda value: f"{value:%Y-%m-%d %H:%M} UTC" if value else "-"
    env.filters["score"] = lambda value: "-" if value is None else f"{value:.4g}"
    env.filters["share"] = lambda value: "-" if value is None else f"{value:.0%}"
    return env


def _links() -> Any:
    from retrainer_provider.hooks.airflow_api import ui_links

    return ui_links()


def _timeline(project: ProjectConfig) -> Any:
    from retrainer.timeline import model_timeline
    from retrainer_provider.hooks.mlflow import MlflowHook

    return model_timeline(project, MlflowHook().get_tracking(), _links())


app = FastAPI(title="retrainer model pages", docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(HTTPException)
async def _login_first(request: Request, error: HTTPException) -> Response:
    """A browser that is not signed in goes to Airflow's login, and comes back."""
    if error.status_code == status.HTTP_401_UNAUTHORIZED and "text/html" in request.headers.get("accept", ""):
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login()
        return RedirectResponse(f"{login}?next={quote(str(request.url), safe='')}", status.HTTP_303_SEE_OTHER)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)


@app.get("/", response_class=HTMLResponse)
def index(user: User) -> HTMLResponse:
    """The projects this user may read, each with its champion."""
    from retrainer.steps.common import champion_version
    from retrainer_provider.hooks.mlflow import MlflowHook

    tracking = MlflowHook().get_tracking()
    rows = []
    for name, project in sorted(_projects().items()):
        if not _may_read(user, name):
            continue
        try:
            with tracking.active():
                champion = champion_version(tracking.client(), project)
            serving = f"v{champion.version}" if champion else "no champion yet"
        except Exception as error:  # one unreachable registry must not hide the other projects
            serving = f"registry unreachable: {error}"
        rows.append({"project": project, "serving": serving})
    return HTMLResponse(_templates().get_template("index.html").render(rows=rows, links=_links()))


@app.get("/models/{name}", response_class=HTMLResponse)
def model_page(name: str, user: User) -> HTMLResponse:
    """A model's whole life: champion, charts, cycles, alias moves, alerts, quarantine."""
    project = _project(user, name)
    timeline = _timeline(project)
    page = _templates().get_template("model.html")
    return HTMLResponse(page.render(t=timeline, project=project, links=_links()))


@app.get("/models/{name}/timeline.json")
def model_timeline_json(name: str, user: User) -> JSONResponse:
    """The model page's content as JSON."""
    return JSONResponse(_timeline(_project(user, name)).model_dump(mode="json"))


@app.get("/models/{name}/files/{path:path}")
def report_file(name: str, path: str, user: User) -> Response:
    """A report under the project's ``reports/`` or ``quarantine/`` folder (Evidently, Data Docs, quarantine)."""
    from retrainer import storage

    project = _project(user, name)
    parts = served_parts(path)
    if parts is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{path!r} is not a report of project {name!r}")
    uri = storage.join(project.data.root_uri, *parts)
    if not storage.exists(uri):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{path!r} does not exist (any more)")
    data = storage.read_bytes(uri)
    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(data, media_type=media)


@app.get("/icon.svg")
def icon() -> Response:
    """The navigation icon (public, like Airflow's own static files)."""
    return Response((TEMPLATES / "icon.svg").read_bytes(), media_type="image/svg+xml")


@app.get("/dags/{dag_id}")
def dag_model_page(dag_id: str, user: User) -> RedirectResponse:
    """A project's DAG (``retrain_``/``monitor_``/``rollback_<project>``) → its model page."""
    for prefix in DAG_PREFIXES:
        if dag_id.startswith(prefix) and dag_id[len(prefix) :] in _projects():
            return RedirectResponse(f"../models/{quote(dag_id[len(prefix) :])}", status.HTTP_303_SEE_OTHER)
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"{dag_id!r} is not a retraining DAG")
