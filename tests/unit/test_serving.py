"""The serving check's verdict (budgets, the champion's figures, the noise floor) and its output checks."""

from __future__ import annotations

import math

import pytest

from retrainer.config import ServingConfig
from retrainer.serving import ServingFigures, judge, output_problem


def _figures(p95: float = 2.0, memory: float = 30.0, problem: str | None = None) -> ServingFigures:
    return ServingFigures(
        model_uri="models:/m/2", rows=500, problem=problem, p95_ms_per_1k_rows=p95, peak_memory_mb=memory
    )


def test_a_candidate_within_budget_and_near_the_champion_passes_with_both_figures_named() -> None:
    passed, reason = judge(_figures(3.0, 40), _figures(2.0, 35), ServingConfig())
    assert passed
    assert reason == (
        "serving check passed: p95 3 ms per 1,000 rows, +40 MB on 500 rows "
        "(champion: p95 2 ms per 1,000 rows, +35 MB)"
    )


@pytest.mark.parametrize(
    ("budget", "candidate", "expected"),
    [
        ({"max_p95_ms_per_1k_rows": 5}, _figures(8.0), "p95 8 ms per 1,000 rows exceeds the budget 5"),
        ({"max_peak_memory_mb": 20}, _figures(memory=30), "+30 MB exceeds the memory budget 20 MB"),
        ({}, _figures(90.0), "p95 90 ms per 1,000 rows is over 3 times the champion's 2"),
        ({}, _figures(memory=400), "+400 MB is over 3 times the champion's +30 MB"),
        ({}, _figures(problem="12 of 500 predictions are NaN or infinite"), "12 of 500 predictions are NaN"),
    ],
)
def test_a_candidate_over_a_budget_or_far_behind_the_champion_fails_naming_why(
    budget: dict, candidate: ServingFigures, expected: str
) -> None:
    passed, reason = judge(candidate, _figures(2.0, 30), ServingConfig(**budget))
    assert not passed and reason.startswith("serving check failed: ") and expected in reason


def test_ratios_under_the_noise_floor_do_not_fail_and_an_unmeasured_champion_is_named() -> None:
    # 10x the champion, but 10 ms per 1,000 rows and 50 MB are machine noise, not the model.
    assert judge(_figures(10.0, 50), _figures(1.0, 5), ServingConfig())[0]
    passed, reason = judge(_figures(), _figures(problem="cannot load: gone"), ServingConfig())
    assert passed and reason.endswith("(champion not measured: cannot load: gone)")
    assert judge(_figures(90.0), _figures(2.0), ServingConfig(max_factor_vs_champion=None))[0]


def test_outputs_a_consumer_cannot_use_are_named() -> None:
    assert output_problem([1.0, 2.0, 3.0], 3) is None
    assert output_problem([[1.0], [2.0]], 2) is None  # one column is one value per row
    assert output_problem([1.0, 2.0], 3) == "3 rows in, output of shape (2,) out"
    assert output_problem(["a", "b"], 2) == "output of type <U1, not numbers"
    assert output_problem([1.0, math.nan, math.inf], 3) == "2 of 3 predictions are NaN or infinite"
