"""Ten promotions race against the same champion on a real MLflow server: exactly one moves ``@champion``.

Each candidate was evaluated against v1 and clears the gate. Ten separate processes (as ten Airflow workers
would be) then promote at once, released together by a barrier. The project's alias lease serialises them and
each checks, under it, that the champion is still the one it was compared with: the first wins, the nine others
find that the champion moved and record why, registering nothing. The alias history shows exactly the two moves.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrainer import steps
from retrainer.config import load_config
from retrainer.steps.evaluation import Evaluation
from retrainer.tracking import Tracking
from tests.helpers import MlflowServer

pytestmark = pytest.mark.integration

RACERS = 10


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on SQLite, artifacts served by the server; its URL."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"), workers=2)  # ten racers at once
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _promote_in_own_process(
    config_path: str, url: str, run_id: str, evaluation: str, barrier: Any, out: str
) -> None:
    """One racer: wait for the others, then promote (a fresh process, as on another worker)."""
    config = load_config(Path(config_path))
    record = Evaluation.model_validate_json(evaluation)
    barrier.wait(timeout=120)
    result = steps.promote(config, Tracking(url), run_id, record, lock_wait_s=240)
    Path(out).write_text(result.model_dump_json())


def test_ten_concurrent_promotions_against_the_same_champion_move_the_alias_once(
    mlflow_server: str, tmp_path: Path, synth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # models load without it
    tracking = Tracking(mlflow_server)
    project = synth.make_project(tmp_path / "race", "race")
    project.land_and_accept(range(2))
    config = project.config
    cutoff = synth.cutoff_after(1)
    first = steps.train(config, tracking, cutoff, "champion", max_train_rows=20)
    assert steps.promote(config, tracking, first.run_id, steps.evaluate(config, tracking, first.run_id)).promoted

    racers = []
    for index in range(RACERS):
        training = steps.train(config, tracking, cutoff, f"racer-{index}")
        evaluation = steps.evaluate(config, tracking, training.run_id)
        assert evaluation.champion_version == "1"
        racers.append((training.run_id, evaluation))

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    outputs = [tmp_path / f"racer-{index}.json" for index in range(RACERS)]
    processes = [
        context.Process(
            target=_promote_in_own_process,
            args=(str(project.path), mlflow_server, run_id, evaluation.model_dump_json(), barrier, str(out)),
        )
        for (run_id, evaluation), out in zip(racers, outputs, strict=True)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=420)
    assert [p.exitcode for p in processes] == [0] * RACERS

    records = [json.loads(out.read_text()) for out in outputs]
    winners = [r for r in records if r["verdict"] == "promoted"]
    assert len(winners) == 1, [r["reason"] for r in records]
    [winner] = winners
    losers = [r for r in records if r is not winner]
    assert all(r["verdict"] == "rejected" and r["version"] is None for r in losers)
    assert all(
        r["reason"].startswith(f"superseded: the champion moved from v1 to v{winner['version']} (promotion by ")
        for r in losers
    ), [r["reason"] for r in losers]

    client = tracking.client()
    assert str(client.get_model_version_by_alias("race", "champion").version) == winner["version"]
    assert sorted(str(v.version) for v in client.search_model_versions("name='race'")) == ["1", winner["version"]]
    moves = steps.alias_history(config, tracking)
    assert [(m.from_version, m.to_version, m.run_id) for m in moves] == [
        (None, "1", first.run_id),
        ("1", winner["version"], winner["run_id"]),
    ]
