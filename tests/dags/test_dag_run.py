"""The weekly DAG run with ``dag.test()`` on a worker that knows MLflow only through the ``mlflow_default``
connection: no ``MLFLOW_TRACKING_URI``, an empty working directory. A task that fell back to MLflow's default
store would create ``mlflow.db`` there, and find no champion where the others put it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]


def test_a_cycle_runs_with_only_the_mlflow_connection_set(synth: SimpleNamespace, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    projects = tmp_path / "projects"
    project = synth.make_project(projects, "conn_only")
    (projects / "project.yaml").rename(projects / "conn_only.yaml")
    project.land(range(2), rows=300)
    gx_root = synth.context_with_suite(tmp_path, "conn_only")
    store = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    # Artifacts where the test says, not in ./mlruns of whichever process logs first.
    MlflowClient(store).create_experiment("conn_only", artifact_location=str(tmp_path / "mlflow" / "artifacts"))
    workdir = tmp_path / "worker"
    workdir.mkdir()
    home = tmp_path / "airflow"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AIRFLOW"))}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "http", "host": store}),
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        "RETRAINER_PROJECTS_DIR": str(projects),
        "RETRAINER_GX_ROOT": str(gx_root),
        "RETRAINER_CODE_VERSION": "dag-test",
        "PYTHONPATH": str(REPO / "plugins"),
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, cwd=workdir, capture_output=True, timeout=300, check=True)
    script = textwrap.dedent(
        f"""
        from airflow.dag_processing.dagbag import DagBag
        dag = DagBag(dag_folder={str(REPO / "dags")!r}).dags["retrain_conn_only"]
        run = dag.test(run_conf={{"cutoff": {synth.cutoff_after(1).isoformat()!r}}})
        print("STATE", run.state)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=workdir, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert "STATE success" in output, output[-4000:]
    champion = MlflowClient(store).get_model_version_by_alias("conn_only", "champion")
    assert str(champion.version) == "1" and champion.tags["retrainer.decision"] == "promoted"
    assert sorted(p.name for p in workdir.iterdir()) == [], "a task wrote into the worker's working directory"

    # A second champion (as a later promotion would leave it), then the manual rollback DAG moves back to v1.
    client = MlflowClient(store)
    source = client.get_model_version_download_uri("conn_only", "1")
    second = client.create_model_version("conn_only", source, run_id=champion.run_id)
    client.set_model_version_tag("conn_only", second.version, "retrainer.previous_champion", "1")
    client.set_registered_model_alias("conn_only", "champion", second.version)
    script = textwrap.dedent(
        f"""
        from airflow.dag_processing.dagbag import DagBag
        dag = DagBag(dag_folder={str(REPO / "dags")!r}).dags["rollback_conn_only"]
        run = dag.test(run_conf={{"reason": "v2 misbehaves in production"}})
        print("STATE", run.state)
        print("AGAIN", dag.test(run_conf={{"reason": "twice", "to_version": "1"}}).state)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=workdir, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert "STATE success" in output, output[-4000:]
    assert "AGAIN failed" in output and "v1 of conn_only is already the champion" in output, output[-4000:]
    assert str(client.get_model_version_by_alias("conn_only", "champion").version) == "1"
    history = [
        json.loads(v)
        for k, v in sorted(client.get_registered_model("conn_only").tags.items())
        if "alias_history" in k
    ]
    assert [(m["action"], m["from_version"], m["to_version"]) for m in history] == [
        ("promotion", None, "1"),
        ("rollback", "2", "1"),
    ]
    assert history[1]["reason"] == "v2 misbehaves in production" and "(Airflow run manual__" in history[1]["by"]
