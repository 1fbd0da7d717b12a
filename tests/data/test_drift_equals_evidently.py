"""The drift step's verdicts, computed in NumPy over all rows, are Evidently's on the real demo weeks and on
synthetic shifts (issue 12 item 1): the same score for every column (to 1e-9) and the same verdicts, with the
demo project's rule and with the other stattests a project may choose."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from retrainer import demo
from retrainer.config import DriftConfig, load_config
from retrainer.drift import CATEGORICAL, NUMERIC, _evidently_report, measure, parse_snapshot

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_WEEKS = demo.week_starts(date(2013, 1, 7), 4)
CURRENT_WEEKS = [date(2013, 2, 4), date(2013, 4, 1), date(2013, 6, 24), date(2013, 11, 4)]
RULES = [
    None,  # the demo project's own: wasserstein 0.3 / jensenshannon 0.1
    {"num_method": "ks", "num_threshold": 0.05, "cat_method": "chisquare", "cat_threshold": 0.05},
    {"num_method": "psi", "num_threshold": 0.1, "cat_method": "psi", "cat_threshold": 0.1},
    {"num_method": "jensenshannon", "num_threshold": 0.1, "cat_method": "jensenshannon", "cat_threshold": 0.1},
]


@pytest.fixture(scope="module")
def project():
    return load_config(REPO_ROOT / "projects" / "flights.yaml")


@pytest.fixture(scope="module")
def weeks(project) -> dict[date, pd.DataFrame]:
    columns = [project.schema_.timestamp, *project.numeric_features, *project.categorical_features]
    flights = demo.flights_with_weather()
    return {week: demo.week_frame(flights, week, columns) for week in [*REFERENCE_WEEKS, *CURRENT_WEEKS]}


def _compare(current: pd.DataFrame, reference: pd.DataFrame, project, rule: DriftConfig) -> int:
    numeric, categorical = project.numeric_features, project.categorical_features
    types = {c: NUMERIC for c in numeric} | {c: CATEGORICAL for c in categorical}
    columns = list(types)
    snapshot = _evidently_report(current, reference, numeric, categorical, columns, rule)
    expected = parse_snapshot(snapshot.dict(), columns, types)
    got = measure(current, reference, types, rule)
    for theirs, ours in zip(expected, got, strict=True):
        assert ours.column == theirs.column and ours.method == theirs.method
        assert ours.score == pytest.approx(theirs.score, rel=1e-9, abs=1e-12), (ours.column, ours.method)
        assert ours.drifted is theirs.drifted, (ours.column, ours.method, ours.score)
    return sum(c.drifted for c in got)


@pytest.mark.parametrize("rule_change", RULES, ids=["demo", "ks_chisquare", "psi", "jensenshannon"])
def test_the_verdicts_on_the_demo_weeks_are_evidentlys(weeks, project, rule_change) -> None:
    rule = project.drift if rule_change is None else project.drift.model_copy(update=rule_change)
    reference = pd.concat([weeks[w] for w in REFERENCE_WEEKS], ignore_index=True)
    drifted = [_compare(weeks[week], reference, project, rule) for week in CURRENT_WEEKS]
    assert any(drifted), "the seasons of 2013 move some columns: the comparison must cover drifted columns too"


def test_the_verdicts_on_synthetic_shifts_are_evidentlys(weeks, project) -> None:
    reference = pd.concat([weeks[w] for w in REFERENCE_WEEKS], ignore_index=True)
    shifted = weeks[REFERENCE_WEEKS[-1]].copy()
    shifted["dep_delay"] = shifted["dep_delay"] + 45  # a late week
    shifted["temp"] = shifted["temp"] * 0.5
    shifted["origin"] = "EWR"  # one airport only
    own = _compare(weeks[REFERENCE_WEEKS[-1]], reference, project, project.drift)  # a week of the reference
    assert _compare(shifted, reference, project, project.drift) >= own + 3
