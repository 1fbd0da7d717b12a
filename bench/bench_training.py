"""Training in a container against training in process, for the same data and parameters.

For each size (the demo window, and ~1M rows) the same candidate is trained, alternately:

- **in process**: ``steps.train`` called in this Python process (libraries already imported);
- **subprocess**: the ``local`` backend, ``python -m retrainer train`` as a fresh process;
- **container**: the ``docker`` backend's launch (same command, environment, read-only data mount, network
  and limits as ``TrainerDockerOperator``) run on a Docker engine through the Docker SDK.

All three log to one real MLflow server (started here on a free port) and train the same rows with the same seed.
The ~1M-row window is the demo's four weeks, each resampled (seeded, with replacement) to 250,000 rows.

Needs a Docker engine (``DOCKER_HOST``) with the trainer image (``make trainer-image``). Usage:
    .venv/bin/python bench/bench_training.py [--repeats 3] [--image retrainer/trainer:latest] [--big-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from _scratch import REPO, scratch_environment

from retrainer.tracking import Tracking

WEEKS = 4


def _start_mlflow(root: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the MLflow server did not start")


def _project(root: Path, name: str) -> Any:
    from retrainer.config import load_config

    raw = yaml.safe_load((REPO / "projects" / "flights.yaml").read_text())
    raw.update(name=name, registered_model=name)
    raw["data"]["root_uri"] = str(root / name)
    raw["training"] = {"backend": "docker", "image": ARGS.image, "cpus": 2, "memory": "12g"}
    path = root / "projects" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def _land(config: Any, rows_per_week: int | None) -> str:
    """Land and accept the demo's first weeks (resampled to ``rows_per_week`` when given); returns the cutoff."""
    from retrainer import demo
    from retrainer.catalog import Catalog

    flights = demo.flights_with_weather()
    columns = list(config.schema_.columns)
    catalog = Catalog(config)
    weeks = demo.week_starts(demo.DEMO_START, WEEKS)
    for week in weeks:
        frame = demo.week_frame(flights, week, columns)
        if rows_per_week is not None:
            frame = frame.sample(n=rows_per_week, replace=True, random_state=week.toordinal())
            frame = frame.sort_values(config.schema_.timestamp).reset_index(drop=True)
        catalog.land(week.isoformat(), frame)
    catalog.register_new()
    for week in weeks:
        catalog.accept(week.isoformat(), {"success": True, "summary": "accepted by the benchmark"})
    return demo.week_cutoff(weeks[-1]).isoformat()


def _in_process(config: Any, cutoff: str, label: str) -> tuple[float, dict[str, Any]]:
    from retrainer import steps

    started = time.perf_counter()
    result = steps.train(config, Tracking.from_env(), cutoff, label, trigger="bench")
    return time.perf_counter() - started, result.to_json()


def _subprocess(config: Any, cutoff: str, label: str) -> tuple[float, dict[str, Any]]:
    from retrainer import training
    from retrainer.config import TrainingBackend

    backend = {"backend": TrainingBackend.LOCAL}
    local = config.model_copy(update={"training": config.training.model_copy(update=backend)})
    launch = training.plan(local, Tracking.from_env(), cutoff, label, trigger="bench")
    started = time.perf_counter()
    result = training.run_local(launch, timeout_s=3600)
    return time.perf_counter() - started, result.to_json()


def _container(config: Any, cutoff: str, label: str) -> tuple[float, dict[str, Any]]:
    import docker

    from retrainer import training

    launch = training.plan(config, Tracking.from_env(), cutoff, label, trigger="bench")
    client = docker.from_env()
    image = client.images.get(config.training.image)
    root = config.data.root_uri
    started = time.perf_counter()
    container = client.containers.run(
        config.training.image,
        launch.command_with_result(training.CONTAINER_RESULT_PATH),
        environment={**launch.environment, training.IMAGE_ID_ENV: image.id},
        network_mode="host",
        mounts=[docker.types.Mount(target=root, source=root, type="bind", read_only=True)],
        nano_cpus=int(config.training.cpus * 1e9),
        mem_limit=config.training.memory_bytes,
        memswap_limit=config.training.memory_bytes,
        detach=True,
    )
    try:
        status = container.wait()
        if status["StatusCode"] != 0:
            raise RuntimeError(f"container failed: {container.logs(tail=30).decode()}")
        archive, _ = container.get_archive(training.CONTAINER_RESULT_PATH)
        elapsed = time.perf_counter() - started
        import io
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(b"".join(archive))) as tar:
            member = tar.getmembers()[0]
            result = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    finally:
        container.remove(force=True)
    return elapsed, result


def main() -> None:
    import socket

    import mlflow

    root = scratch_environment("retrainer-bench-training-")
    root.chmod(0o755)  # the image's non-root user reads the mounted batches
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = _start_mlflow(root / "mlflow", port)
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    sizes = {"demo window (4 weeks)": None, f"~{ARGS.big_rows:,} rows": ARGS.big_rows // WEEKS}
    rows: list[dict[str, Any]] = []
    try:
        for label, per_week in sizes.items():
            config = _project(root, f"bench_{'demo' if per_week is None else 'big'}")
            cutoff = _land(config, per_week)
            times: dict[str, list[float]] = {"in process": [], "subprocess": [], "container": []}
            metrics: dict[str, set[float]] = {name: set() for name in times}
            train_rows = 0
            for repeat in range(ARGS.repeats):
                for name, run in (
                    ("in process", _in_process),
                    ("subprocess", _subprocess),
                    ("container", _container),
                ):
                    elapsed, result = run(config, cutoff, f"bench-{repeat}-{name.replace(' ', '_')}")
                    times[name].append(elapsed)
                    metrics[name].add(round(result["train_metrics"]["rmse"], 6))
                    train_rows = result["train_rows"]
                    print(f"{label} #{repeat + 1} {name}: {elapsed:.1f} s", flush=True)
            medians = {name: statistics.median(values) for name, values in times.items()}
            rows.append(
                {
                    "size": label,
                    "train_rows": train_rows,
                    **{f"{name} s": round(value, 2) for name, value in medians.items()},
                    "container ÷ in process": round(medians["container"] / medians["in process"], 2),
                    "container ÷ subprocess": round(medians["container"] / medians["subprocess"], 2),
                    "same model": len(set().union(*metrics.values())) == 1,
                }
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    print()
    print("| size | train rows | in process s | subprocess s | container s | container ÷ in process | "
          "container ÷ subprocess | same model |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['size']} | {row['train_rows']:,} | {row['in process s']} | {row['subprocess s']} | "
            f"{row['container s']} | {row['container ÷ in process']} | {row['container ÷ subprocess']} | "
            f"{row['same model']} |"
        )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image", default="retrainer/trainer:latest")
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    ARGS = parser.parse_args()
    main()
