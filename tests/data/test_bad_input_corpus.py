"""The bad-input corpus: every kind of bad file a landing zone gets, and where each one ends.

A synthetic project (its own suite, weekly batches, ``data.period_days: 7``) gets a champion trained on three
good weeks. Each case then drops its input into a copy of that project's data root and runs ingest and
validate as a cycle does. Each asserts a clear error naming the problem, where the input ended up (quarantine
with its report, ``landing/rejected/`` with a reason file, or left in place with a logged reason), that no
accepted batch changed (content hashes) and that the champion did not move. The last test drops the whole
corpus at once beside a good week and shows that the good week is still trained on normally.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from retrainer import steps, storage
from retrainer.catalog import BatchStatus, Catalog
from retrainer.config import ProjectConfig, load_config
from retrainer.steps.common import BatchRejectedError
from retrainer.tracking import Tracking

BASE_WEEKS = [0, 1, 2]
CORPUS_CUTOFF_WEEK = 80  # after every case's week (cases use weeks 10 on), before today
MAX_FILE_MB = 0.25


@dataclass(frozen=True)
class Case:
    """One bad input: the files it drops (name -> bytes), where they must end and the words that say why."""

    kind: str
    files: Callable[[Any, Path, int], dict[str, bytes]]  # (synth, landing folder, the case's own week)
    ends: str  # quarantined | rejected | ignored | waiting | accepted
    says: str


def _week(synth: Any, week: int, rows: int = 200) -> pd.DataFrame:
    return synth.week(week, rows, seed=week)


def _parquet(frame: pd.DataFrame) -> bytes:
    return storage.parquet_bytes(frame)


def _one(synth: Any, week: int, change: Callable[[pd.DataFrame], pd.DataFrame], rows: int = 200) -> dict:
    return {f"{synth.batch_id(week)}.parquet": _parquet(change(_week(synth, week, rows)))}


def _set(column: str, rows: slice, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[frame.index[rows], column] = value
        return frame

    return change


def _unseen_region(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["region"] = frame["region"].astype(str)
    frame.loc[:9, "region"] = "central"
    return frame


def _outside_period(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[:9, "ts"] = frame.loc[:9, "ts"] + pd.Timedelta(weeks=6)
    return frame


def _mixed_zones(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    utc = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    paris = frame["ts"].dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m-%dT%H:%M:%S")  # naive, local
    frame["ts"] = np.where(np.arange(len(frame)) % 2 == 0, utc, paris)
    return frame


def _future(synth: Any, landing: Path, week: int) -> dict[str, bytes]:
    week += 400  # 2031
    return {f"{synth.batch_id(week)}.parquet": _parquet(_week(synth, week))}


def _same_content_new_name(synth: Any, landing: Path, week: int) -> dict[str, bytes]:
    registered = landing.parent / "batches" / f"{synth.batch_id(1)}.parquet"
    return {f"{synth.batch_id(week)}.parquet": registered.read_bytes()}


def _same_name_new_content(synth: Any, landing: Path, week: int) -> dict[str, bytes]:
    return _one(synth, 1, _set("x1", slice(0, 1), 0.5))


def _huge(synth: Any, landing: Path, week: int) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    frame = _week(synth, week, 40_000).assign(x1=rng.normal(size=40_000), x2=rng.normal(size=40_000))
    data = _parquet(frame)
    assert len(data) > MAX_FILE_MB * 1024 * 1024
    return {f"{synth.batch_id(week)}.parquet": data}


def _truncated(synth: Any, landing: Path, week: int) -> dict[str, bytes]:
    data = _parquet(_week(synth, week))
    return {f"{synth.batch_id(week)}.parquet": data[: len(data) // 2]}


CASES = [
    Case(
        "missing column",
        lambda s, _, w: _one(s, w, lambda f: f.drop(columns="x2")),
        "quarantined",
        "'x2' is missing",
    ),
    Case(
        "extra column",
        lambda s, _, w: _one(s, w, lambda f: f.assign(extra=1.0)),
        "quarantined",
        "columns_to_match_set",
    ),
    Case(
        "renamed column",
        lambda s, _, w: _one(s, w, lambda f: f.rename(columns={"x1": "X1"})),
        "quarantined",
        "'x1' is missing",
    ),
    Case(
        "wrong dtype",
        lambda s, _, w: _one(s, w, lambda f: f.assign(x1=f["x1"].round(2).astype(str))),
        "quarantined",
        "'x1' is declared float but holds object",
    ),
    Case(
        "all-null target",
        lambda s, _, w: _one(s, w, lambda f: f.assign(y=np.nan)),
        "quarantined",
        "not_be_null(y)",
    ),
    Case(
        "nulls not allowed",
        lambda s, _, w: _one(s, w, _set("y", slice(0, 7), np.nan)),
        "quarantined",
        "not_be_null(y)",
    ),
    Case(
        "out of range", lambda s, _, w: _one(s, w, _set("x1", slice(0, 5), 1000.0)), "quarantined", "between(x1)"
    ),
    Case("unseen category", lambda s, _, w: _one(s, w, _unseen_region), "quarantined", "in_set(region)"),
    Case("0 rows", lambda s, _, w: _one(s, w, lambda f: f.iloc[0:0]), "quarantined", "has no rows"),
    Case(
        "0 bytes", lambda s, _, w: {f"{s.batch_id(w)}.parquet": b""}, "quarantined", "not a readable Parquet file"
    ),
    Case("truncated Parquet", _truncated, "quarantined", "not a readable Parquet file"),
    Case(
        "CSV named .parquet",
        lambda s, _, w: {f"{s.batch_id(w)}.parquet": _week(s, w).to_csv(index=False).encode()},
        "quarantined",
        "not a readable Parquet file",
    ),
    Case(
        "duplicated rows",
        lambda s, _, w: _one(s, w, lambda f: pd.concat([f, f], ignore_index=True)),
        "quarantined",
        "repeat another row exactly",
    ),
    Case("same content, new name", _same_content_new_name, "rejected", "same content as batch 2024-01-08"),
    Case("same name, new content", _same_name_new_content, "rejected", "already registered (accepted) with other"),
    Case("timestamps in the future", _future, "quarantined", "timestamps in the future"),
    Case(
        "outside its period",
        lambda s, _, w: _one(s, w, _outside_period),
        "quarantined",
        "outside the batch's period",
    ),
    Case("mixed time zones", lambda s, _, w: _one(s, w, _mixed_zones), "quarantined", "not timestamps"),
    Case(
        "naive timestamps",
        lambda s, _, w: _one(s, w, lambda f: f.assign(ts=f["ts"].dt.tz_localize(None))),
        "quarantined",
        "have no time zone",
    ),
    Case(
        "missing timestamps",
        lambda s, _, w: _one(s, w, _set("ts", slice(0, 3), pd.NaT)),
        "quarantined",
        "have no timestamp",
    ),
    Case(
        "infinite feature",
        lambda s, _, w: _one(s, w, _set("x2", slice(0, 3), np.inf)),
        "quarantined",
        "infinite value",
    ),
    Case("tiny batch", lambda s, _, w: _one(s, w, lambda f: f, rows=5), "quarantined", "row_count_to_be_between"),
    Case(
        "huge batch",
        _huge,
        "quarantined",
        f"more than data.max_file_mb ({MAX_FILE_MB:g} MB)",
    ),
    Case(
        "space in the name",
        lambda s, _, w: {"week 17.parquet": _parquet(_week(s, w))},
        "rejected",
        "'week 17' is not a usable batch id",
    ),
    Case(
        "unicode name",
        lambda s, _, w: {"wöche-17.parquet": _parquet(_week(s, w))},
        "rejected",
        "not a usable batch id",
    ),
    Case("'..' name", lambda s, _, w: {"...parquet": _parquet(_week(s, w))}, "ignored", "hidden name"),
    Case(
        "upper-case extension",
        lambda s, _, w: {f"{s.batch_id(w)}.PARQUET": _parquet(_week(s, w))},
        "accepted",
        "passed",
    ),
    Case(
        "not a batch's name",
        lambda s, _, w: {"notes.txt": b"hello"},
        "ignored",
        "does not match data.file_pattern",
    ),
    Case(
        "period after the cutoff",
        lambda s, _, w: {
            f"{s.batch_id(CORPUS_CUTOFF_WEEK + w)}.parquet": _parquet(_week(s, CORPUS_CUTOFF_WEEK + w))
        },
        "waiting",
        "",
    ),
]


# -- the project with a champion ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Base:
    folder: Path
    gx_root: Path
    champion: str


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, module_mlflow: str, synth: Any) -> Base:
    folder = tmp_path_factory.mktemp("corpus_base")
    project = synth.make_project(folder, "corpus_sales", min_improvement=0.0, floor=5.0)
    document = yaml.safe_load(project.path.read_text())
    document["data"].update({"period_days": 7, "max_file_mb": MAX_FILE_MB})
    project.path.write_text(yaml.safe_dump(document, sort_keys=False))
    gx_root = synth.context_with_suite(tmp_path_factory.mktemp("corpus_gx"), "corpus_sales")
    suite = gx_root / "expectations" / "corpus_sales.json"
    content = json.loads(suite.read_text())
    content["expectations"] += [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 20}},
    ]
    suite.write_text(json.dumps(content))
    config = load_config(project.path)
    for week in BASE_WEEKS:
        Catalog(config).land(synth.batch_id(week), _week(synth, week))
    record = steps.run_cycle(config, Tracking.from_env(), synth.cutoff_after(2), context_root=gx_root)
    assert record.decision is not None and record.decision.verdict == "promoted"
    return Base(folder=folder, gx_root=gx_root, champion=str(record.decision.version))


def _copy(base: Base, target: Path) -> ProjectConfig:
    """The base project with its data root copied: each case changes only its own copy."""
    shutil.copytree(base.folder, target)
    return load_config(target / "project.yaml")


def _accepted_state(config: ProjectConfig) -> dict[str, tuple[str, str]]:
    """Accepted batches: their recorded hash and the hash of their file now."""
    return {
        r.batch_id: (r.sha256, storage.sha256_of(r.uri))
        for r in Catalog(config).all()
        if r.status is BatchStatus.ACCEPTED
    }


def _champion(config: ProjectConfig) -> str:
    client = Tracking.from_env().client()
    return str(client.get_model_version_by_alias(config.model_name, "champion").version)


def _ingest_and_validate(config: ProjectConfig, base: Base, synth: Any) -> tuple[Any, str]:
    """Ingest and validate as a cycle does; returns the ingest result and validation's error (or '')."""
    ingested = steps.ingest(config, Tracking.from_env(), synth.cutoff_after(CORPUS_CUTOFF_WEEK))
    try:
        steps.validate(
            config, ingested.pending, base.gx_root, build_docs=False, quarantined_on_arrival=ingested.quarantined
        )
    except BatchRejectedError as rejected:
        return ingested, str(rejected)
    return ingested, ""


def _where(config: ProjectConfig, name: str, ingested: Any) -> tuple[str, str]:
    """Where a dropped file ended, and the text that says why."""
    catalog = Catalog(config)
    landing = Path(catalog.landing)
    rejected = sorted((landing / "rejected").glob(f"*-{name}.error.txt"))
    if rejected:
        assert (landing / "rejected" / rejected[-1].name.removesuffix(".error.txt")).is_file()
        return "rejected", rejected[-1].read_text()
    ignored = {f.name: f.reason for f in ingested.ignored}
    if name in ignored:
        assert (landing / name).is_file()  # left in place, never read
        return "ignored", ignored[name]
    record = catalog.get(name.rsplit(".", 1)[0])
    if record.status is BatchStatus.QUARANTINED:
        report = Path(record.validation["report_uri"])
        assert Path(record.uri).is_file() and Path(record.uri).parent == report.parent
        return "quarantined", report.read_text()
    if record.status is BatchStatus.LANDED:
        assert record.batch_id in ingested.waiting
        return "waiting", ""
    return record.status.value, record.validation.get("summary", "")


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_a_bad_input_ends_where_it_says_why_and_nothing_else_changes(
    case: Case, base: Base, tmp_path: Path, synth: Any
) -> None:
    config = _copy(base, tmp_path / "project")
    before, champion = _accepted_state(config), _champion(config)
    landing = Path(Catalog(config).landing)
    files = case.files(synth, landing, _week_of(case))
    for name, data in files.items():
        (landing / name).write_bytes(data)

    ingested, error = _ingest_and_validate(config, base, synth)

    for name in files:
        ends, why = _where(config, name, ingested)
        assert ends == case.ends, f"{case.kind}: {name} ended {ends}: {why[:300]}"
        assert case.says in why, f"{case.kind}: {why[:500]}"
        if ends == "quarantined":
            assert case.says in error  # the cycle's error names it too
    assert {k: v for k, v in _accepted_state(config).items() if k in before} == before
    assert all(recorded == now for recorded, now in _accepted_state(config).values())
    assert _champion(config) == champion
    # Nothing was written outside the project's data root (a '..' name cannot escape it).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_label_files_that_training_cannot_use_are_rejected_with_the_reason(
    base: Base, tmp_path: Path, synth: Any
) -> None:
    config = _copy(base, tmp_path / "project")
    catalog = Catalog(config)
    unlabelled = _week(synth, 20).assign(y=np.nan)
    for week, labels in ((20, ["late"] * 200), (21, [np.inf] * 200)):
        catalog.land(synth.batch_id(week), unlabelled.assign(ts=_week(synth, week)["ts"]))
        catalog.register_new()
        catalog.accept(synth.batch_id(week), {"success": True, "summary": "accepted by the test"})
        catalog.land_labels(synth.batch_id(week), pd.DataFrame({"y": labels}))
    outcome = catalog.register_labels()
    reasons = dict(outcome.rejected)
    assert "are not numbers (e.g. 'late')" in reasons[f"{synth.batch_id(20)}.parquet"]
    assert "are infinite" in reasons[f"{synth.batch_id(21)}.parquet"]
    for week in (20, 21):
        assert catalog.get(synth.batch_id(week)).labels is None
        assert (Path(catalog.labels) / "rejected" / f"{synth.batch_id(week)}.parquet.error.txt").is_file()


def test_a_project_file_with_an_estimator_parameter_out_of_range_is_refused(tmp_path: Path, synth: Any) -> None:
    from typer.testing import CliRunner

    from retrainer.cli import app

    def check(path: Path) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["check-config", "--config", str(path)])
        return result.exit_code, " ".join(result.output.split())  # rich wraps long lines

    project = synth.make_project(tmp_path, estimator="xgboost", params={"n_estimators": -5})
    code, output = check(project.path)
    assert code == 1 and "estimator.params.n_estimators" in output and "must be ≥ 1, got -5" in output
    project = synth.make_project(tmp_path / "b", estimator="xgboost", params={"n_estimatorz": 5})
    code, output = check(project.path)
    assert code == 1 and "no parameter 'n_estimatorz'" in output
    project = synth.make_project(tmp_path / "c", params={"alpha": -1.0})  # Ridge: scikit-learn's own checks
    code, output = check(project.path)
    assert code == 1 and "'alpha' parameter of Ridge must be a float" in output


def _week_of(case: Case) -> int:
    """Each case has a week of its own (10, 11, ...), so that the whole corpus can land at once."""
    return 10 + CASES.index(case)


def test_after_the_whole_corpus_the_next_good_batch_trains_normally(
    base: Base, tmp_path: Path, synth: Any
) -> None:
    config = _copy(base, tmp_path / "project")
    before, champion = _accepted_state(config), _champion(config)
    landing = Path(Catalog(config).landing)
    dropped: dict[str, Case] = {}
    for case in CASES:
        for name, data in case.files(synth, landing, _week_of(case)).items():
            (landing / name).write_bytes(data)
            dropped[name] = case
    good = _week(synth, 60)
    good.loc[:4, "x2"] = np.nan  # missing feature values are imputed: no reason to refuse a batch
    (landing / f"{synth.batch_id(60)}.parquet").write_bytes(_parquet(good))
    tracking, cutoff = Tracking.from_env(), synth.cutoff_after(CORPUS_CUTOFF_WEEK)

    first = steps.run_cycle(config, tracking, cutoff, context_root=base.gx_root)
    assert first.error and "quarantined" in first.error and first.training is None
    assert Catalog(config).get(synth.batch_id(60)).status is BatchStatus.ACCEPTED  # beside the bad ones
    for name, case in dropped.items():
        ends, why = _where(config, name, first.ingest)
        assert ends == case.ends and case.says in why, (case.kind, ends, why[:300])

    second = steps.run_cycle(config, tracking, cutoff, context_root=base.gx_root)
    assert second.error is None, second.error
    assert second.training is not None and synth.batch_id(60) in second.training.window
    quarantined = {r.batch_id for r in Catalog(config).all() if r.status is BatchStatus.QUARANTINED}
    assert len(quarantined) == sum(c.ends == "quarantined" for c in CASES)
    assert not set(second.training.window) & quarantined
    assert second.decision is not None and second.decision.verdict in {"promoted", "rejected"}
    assert _champion(config) in {champion, str(second.decision.version)}
    assert {k: v for k, v in _accepted_state(config).items() if k in before} == before


def test_retrainer_quarantine_evicts_an_accepted_batch_and_records_why(
    base: Base, tmp_path: Path, synth: Any
) -> None:
    from typer.testing import CliRunner

    from retrainer.cli import app

    config = _copy(base, tmp_path / "project")
    batch = synth.batch_id(1)
    before, champion = Catalog(config).get(batch), _champion(config)
    result = CliRunner().invoke(
        app,
        ["quarantine", "-c", str(tmp_path / "project" / "project.yaml"), "-b", batch, "--reason", "sensor fault"],
    )
    assert result.exit_code == 0, result.output
    eviction = json.loads(result.output)
    record = Catalog(config).get(batch)
    assert record.status is BatchStatus.QUARANTINED and record.sha256 == before.sha256
    assert storage.sha256_of(record.uri) == before.sha256  # moved, not lost
    report = json.loads(Path(eviction["report_uri"]).read_text())
    assert report["reason"] == "sensor fault" and report["previous_status"] == "accepted" and report["evicted_by"]
    assert json.loads(Path(eviction["record_uri"]).read_text())["batch_id"] == batch
    assert base.champion in eviction["trained_into"]  # (the corpus test's cycle may have trained on it too)
    assert eviction["champion_trained_on_it"] is (champion in eviction["trained_into"])
    assert batch not in [r.batch_id for r in Catalog(config).window(synth.cutoff_after(CORPUS_CUTOFF_WEEK), 4)]
    assert _champion(config) == champion  # the alias is not moved by an eviction
    again = CliRunner().invoke(
        app, ["quarantine", "-c", str(tmp_path / "project" / "project.yaml"), "-b", batch, "--reason", "twice"]
    )
    assert again.exit_code == 1 and "in quarantine already" in again.output
