"""Drift verdicts that mean the same at any batch size (issue 12 item 2): a batch with no real shift raises no
alert at 500 rows or at 5 million; real shifts are still found at both; false alarms are controlled across
columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrainer.config import DriftConfig
from retrainer.drift import measure, summarize
from retrainer.drift_calibration import significant

TYPES = {"load": "numeric", "wait": "numeric", "gate": "categorical"}
# At most one batch in a thousand with any false alarm (Bonferroni over the columns).
CALIBRATED = {"calibration": "resampled", "false_alarm_rate": 0.001, "correction": "bonferroni"}
RULE = DriftConfig(num_threshold=0.1, cat_threshold=0.1, share_threshold=0.5, key_features=["load"])


def _batch(rng: np.random.Generator, rows: int, load_shift: float = 0.0, wait_shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "load": rng.normal(load_shift, 1.0, rows),
            "wait": rng.exponential(2.0, rows) + wait_shift,
            "gate": rng.choice(np.array(["A", "B", "C", "D"]), rows, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


def _alert(current: pd.DataFrame, reference: pd.DataFrame, rule: DriftConfig) -> bool:
    return summarize(measure(current, reference, TYPES, rule), rule, len(reference), len(current)).drift_detected


def test_small_batches_of_the_same_distribution_alert_only_without_calibration() -> None:
    """500 rows are noisy: a fixed distance of 0.1 is crossed by chance (about one batch in 15 here); the
    calibrated rule knows what 500 rows of the reference look like: at 0.1% a batch, 30 batches expect 0.03
    false alarms."""
    reference = _batch(np.random.default_rng(100), 20_000)
    calibrated = RULE.model_copy(update=CALIBRATED)
    fixed_alerts = calibrated_alerts = 0
    for seed in range(30):
        batch = _batch(np.random.default_rng(seed), 500)
        fixed_alerts += _alert(batch, reference, RULE)
        calibrated_alerts += _alert(batch, reference, calibrated)
    assert fixed_alerts >= 2, "the problem calibration solves: noise at 500 rows crosses a fixed 0.1"
    assert calibrated_alerts == 0


def test_real_shifts_are_still_found_in_small_batches() -> None:
    reference = _batch(np.random.default_rng(101), 20_000)
    calibrated = RULE.model_copy(update=CALIBRATED)
    found = [
        _alert(_batch(np.random.default_rng(s), 500, load_shift=0.6), reference, calibrated) for s in range(5)
    ]
    assert all(found)


def test_five_million_rows_of_the_same_distribution_raise_no_alert_and_tiny_shifts_are_no_drift() -> None:
    """At 5M rows a p-value test calls every tiny shift drift; the calibrated distance rule reports only a
    shift that is both real and at least the project's distance, and nothing for the same distribution."""
    rows = 5_000_000
    reference = _batch(np.random.default_rng(102), rows)
    calibrated = RULE.model_copy(update=CALIBRATED)
    same = measure(_batch(np.random.default_rng(103), rows), reference, TYPES, calibrated)
    assert not any(c.drifted for c in same)
    assert not summarize(same, calibrated, rows, rows).drift_detected

    shifted = _batch(np.random.default_rng(104), rows, load_shift=0.01, wait_shift=0.6)  # tiny, and real
    by_column = {c.column: c for c in measure(shifted, reference, TYPES, calibrated)}
    assert by_column["load"].p_value < 1e-6 and not by_column["load"].drifted  # real but below 0.1: no drift
    assert by_column["wait"].drifted and not by_column["gate"].drifted
    ks = RULE.model_copy(update={"num_method": "ks", "num_threshold": 0.05})
    assert {c.column: c.drifted for c in measure(shifted, reference, TYPES, ks)}["load"]  # what KS says


def test_the_same_data_gets_the_same_calibrated_verdicts() -> None:
    reference = _batch(np.random.default_rng(105), 10_000)
    batch = _batch(np.random.default_rng(106), 800, load_shift=0.15)
    calibrated = RULE.model_copy(update=CALIBRATED)
    first, second = measure(batch, reference, TYPES, calibrated), measure(batch, reference, TYPES, calibrated)
    assert first == second and all(c.p_value is not None for c in first)


def test_bonferroni_bounds_any_false_alarm_and_benjamini_hochberg_the_share_of_them() -> None:
    p_values = [0.001, 0.004, 0.012, 0.3, 0.9]
    assert significant(p_values, 0.05, "bonferroni") == [True, True, False, False, False]  # each <= 0.01
    assert significant(p_values, 0.05, "benjamini_hochberg") == [True, True, True, False, False]
    with pytest.raises(ValueError, match="bonferroni or benjamini_hochberg"):
        significant(p_values, 0.05, "holm")


def test_a_rule_that_cannot_be_calibrated_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"drift\.num_method: 'energy' cannot be calibrated"):
        DriftConfig(num_method="energy", calibration="resampled")
    DriftConfig(num_method="ks", cat_method="chisquare", calibration="resampled")  # p-value tests: corrected
