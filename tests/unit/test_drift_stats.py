"""The NumPy drift statistics give Evidently's numbers and verdicts, column by column (issue 12 item 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrainer import drift_stats
from retrainer.drift_stats import ColumnValues, column_values


def _evidently(method: str, reference: pd.Series, current: pd.Series, kind: str, threshold: float) -> tuple:
    """Evidently's own stattest on the column, after its own cleaning (infinities and NaN dropped)."""
    import evidently.legacy.calculations.stattests  # noqa: F401  (registers them)
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    ref = reference.replace([np.inf, -np.inf], np.nan).dropna()
    cur = current.replace([np.inf, -np.inf], np.nan).dropna()
    if kind == "categorical":  # as the platform hands categories to Evidently: as text
        ref, cur = ref.astype(str), cur.astype(str)
    result = get_stattest(ref, cur, column_type, method)(ref, cur, column_type, threshold)
    return float(result.drift_score), bool(result.drifted)


def _columns(seed: int) -> dict[str, tuple[pd.Series, pd.Series, str]]:
    rng = np.random.default_rng(seed)
    n_ref, n_cur = 3_000, 1_200
    with_gaps = rng.normal(0, 1, n_ref)
    with_gaps[::17] = np.nan
    with_gaps[5] = np.inf
    return {
        "same": (pd.Series(rng.normal(0, 1, n_ref)), pd.Series(rng.normal(0, 1, n_cur)), "numeric"),
        "shifted": (pd.Series(rng.normal(0, 1, n_ref)), pd.Series(rng.normal(0.3, 1.2, n_cur)), "numeric"),
        "skewed": (pd.Series(rng.exponential(3, n_ref)), pd.Series(rng.exponential(3.5, n_cur)), "numeric"),
        "gaps": (pd.Series(with_gaps), pd.Series(rng.normal(0.1, 1, n_cur)), "numeric"),
        "few_values": (  # 6 distinct values: compared value by value, not binned
            pd.Series(rng.integers(0, 6, n_ref).astype(float)),
            pd.Series(rng.integers(1, 7, n_cur).astype(float)),
            "numeric",
        ),
        "carrier": (
            pd.Series(rng.choice(list("ABCDE"), n_ref, p=[0.4, 0.3, 0.2, 0.08, 0.02])),
            pd.Series(rng.choice(list("ABCDF"), n_cur, p=[0.3, 0.3, 0.2, 0.15, 0.05])),
            "categorical",
        ),
        "mixed_types": (  # 1 and "1" are one category, as Evidently compares them as text
            pd.Series(rng.choice(np.array([1, "1", "2", 3.5], dtype=object), n_ref)),
            pd.Series(rng.choice(np.array(["1", 2, "3.5"], dtype=object), n_cur)),
            "categorical",
        ),
        "carrier_same": (
            pd.Series(rng.choice(list("ABC"), n_ref)),
            pd.Series(rng.choice(list("ABC"), n_cur)),
            "categorical",
        ),
    }


NUMERIC_METHODS = [("wasserstein", 0.1), ("ks", 0.05), ("psi", 0.1), ("jensenshannon", 0.1)]
CATEGORICAL_METHODS = [("jensenshannon", 0.1), ("psi", 0.1), ("chisquare", 0.05)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_vectorised_statistic_equals_evidentlys_score_and_verdict(seed: int) -> None:
    compared = 0
    for name, (reference, current, kind) in _columns(seed).items():
        methods = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
        ref, cur = column_values(reference, kind), column_values(current, kind)
        for method, threshold in methods:
            expected, expected_drift = _evidently(method, reference, current, kind, threshold)
            got = drift_stats.score(method, ref, cur)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (name, method)
            assert drift_stats.drifted(method, got, threshold) is expected_drift, (name, method)
            compared += 1
    assert compared == 5 * len(NUMERIC_METHODS) + 3 * len(CATEGORICAL_METHODS)


def test_the_verdicts_fire_on_shifts_and_stay_quiet_on_the_same_distribution() -> None:
    columns = _columns(3)
    same = [column_values(s, "numeric") for s in columns["same"][:2]]
    shifted = [column_values(s, "numeric") for s in columns["shifted"][:2]]
    assert not drift_stats.drifted("wasserstein", drift_stats.score("wasserstein", *same), 0.1)
    assert drift_stats.drifted("wasserstein", drift_stats.score("wasserstein", *shifted), 0.1)
    assert drift_stats.drifted("ks", drift_stats.score("ks", *shifted), 0.05)


def test_other_stattests_are_evidentlys_own_on_the_column() -> None:
    reference, current, _ = _columns(4)["shifted"]
    expected, _ = _evidently("anderson", reference, current, "numeric", 0.05)
    got = drift_stats.score("anderson", column_values(reference, "numeric"), column_values(current, "numeric"))
    assert got == pytest.approx(expected)


def test_undefined_and_inapplicable_statistics_say_why() -> None:
    empty = ColumnValues("numeric", np.array([]), 10)
    some = column_values(pd.Series([1.0, 2.0, 3.0]), "numeric")
    with pytest.raises(ValueError, match="the reference data has no present value"):
        drift_stats.score("wasserstein", empty, some)
    words = column_values(pd.Series(["a", "b"]), "categorical")
    with pytest.raises(ValueError, match="'ks' applies to numeric columns only"):
        drift_stats.score("ks", words, words)
    with pytest.raises(ValueError, match="numeric column 'x' holds values that are not numbers"):
        column_values(pd.Series(["a", "b"], name="x"), "numeric")
    assert not drift_stats.drifted("wasserstein", float("nan"), 0.1)
