"""Addresses the notes, extra links and model pages share, and what the model page's file route may serve."""

from __future__ import annotations

import pytest

from retrainer.links import Links, relative_to_root


def test_links_quote_run_ids_and_leave_mlflow_out_without_its_address() -> None:
    links = Links(airflow="/airflow", mlflow="http://mlflow:5000/")
    run = "manual__2026-12-07T16:30:00.123456+00:00"
    assert links.airflow_run("retrain_flights", run) == (
        "/airflow/dags/retrain_flights/runs/manual__2026-12-07T16%3A30%3A00.123456%2B00%3A00"
    )
    assert links.airflow_task("d", "r", "promote") == "/airflow/dags/d/runs/r/tasks/promote"
    assert links.model_version("m x", "3") == "http://mlflow:5000/#/models/m%20x/versions/3"
    assert links.mlflow_run("abc") == "http://mlflow:5000/#/runs/abc"
    assert links.report("flights", "reports/c 1/drift/drift.html") == (
        "/airflow/retrainer/models/flights/files/reports/c%201/drift/drift.html"
    )
    assert Links().model_version("m", "1") is None and Links().mlflow_run("r") is None
    assert Links().model_page("flights") == "/retrainer/models/flights"


def test_a_report_is_linked_only_under_the_projects_data_root() -> None:
    assert relative_to_root("/data/flights/reports/x.html", "/data/flights") == "reports/x.html"
    assert relative_to_root("/data/flights/reports/x.html", "/data/flights/") == "reports/x.html"
    assert relative_to_root("s3://b/p/reports/x.html", "s3://b/p") == "reports/x.html"
    assert relative_to_root("file:///data/f/reports/x.html", "/data/f") == "reports/x.html"
    assert relative_to_root("/data/flights2/reports/x.html", "/data/flights") is None
    assert relative_to_root("/elsewhere/x.html", "/data/flights") is None


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("reports/c1/drift/drift.html", True),
        ("reports/gx/data_docs/static/styles/x.css", True),
        ("quarantine/2013-01-07/validation.json", True),
        ("quarantine/2013-01-07/2013-01-07.parquet", False),  # a batch's data, not a report
        ("batches/2013-01-07.parquet", False),
        ("catalog/2013-01-07.json", False),
        ("reports/../catalog/x.json", False),
        ("reports/./x.html", True),  # the same file as reports/x.html
        ("/etc/passwd", False),
        ("", False),
    ],
)
def test_the_model_page_serves_reports_and_nothing_else(path: str, served: bool) -> None:
    pytest.importorskip("fastapi")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    from retrainer_provider.ui.app import served_parts

    assert (served_parts(path) is not None) is served
