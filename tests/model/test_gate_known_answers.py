"""The promotion gate on cases whose truth is known, with the platform's own pipeline, comparison and gate.

- **A/A**: candidate and champion are trained the same way on two samples of the same distribution, and scored
  on the same held-out rows: neither is better, so a gate that promotes must be fooled by noise. Over 60
  seeded trials the interval-based gate promotes in at most 5% of them plus sampling slack; the point-estimate
  gate it replaced (promote when the candidate scores better, by the demo's 1% or at all) is measured beside it.
- **A clearly better candidate** (the champion was trained on a twentieth of the rows) is promoted.
- **Non-inferiority** promotes an equally good fresher model, and rejects a clearly worse one.
- **Better overall, clearly worse on one large slice** (the champion is stale everywhere; the candidate learnt
  the new level but a corrupted label feed for one region): rejected, naming the slice.

Note what A/A means for an interval of the *held-out* noise: two models trained on different samples do differ
a little, so with a very large holdout the gate would see that difference and promote the slightly better one
about half the time; ``min_improvement`` (the demo's 1%) is what keeps such negligible gains out.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from retrainer import modeling
from retrainer.comparison import compare, compare_slices, compatibility
from retrainer.config import ProjectConfig, parse_config
from retrainer.promotion import decide, relative_improvement

TRIALS = 60
# A/A: P(promote) is 2.5% for a 95% interval's lower bound; 5% is the bound, plus ~2 binomial sd at 60.
MAX_FALSE_PROMOTIONS = 0.05 + 2 * (0.05 * 0.95 / TRIALS) ** 0.5


def _config(synth: SimpleNamespace, tmp_path: Path, **promotion: Any) -> ProjectConfig:
    document = synth.config_dict(estimator="xgboost", params={"n_estimators": 40, "max_depth": 3, "n_jobs": 1})
    document["promotion"] = {"resamples": 500, **promotion}
    return parse_config(document, tmp_path)


def _sample(synth: SimpleNamespace, weeks: range, seed: int, rows: int) -> pd.DataFrame:
    return pd.concat([synth.week(w, rows, seed=seed) for w in weeks], ignore_index=True)


def _trial(
    synth: SimpleNamespace, config: ProjectConfig, seed: int, champion_rows: int, candidate_rows: int = 400
) -> tuple[Any, float]:
    """Train both models, compare them on the same held-out week; returns the decision and the point gain."""
    holdout = synth.week(50, 1500, seed=10_000 + seed)
    champion = modeling.fit(_sample(synth, range(4), 2 * seed, champion_rows), config)
    candidate = modeling.fit(_sample(synth, range(4), 2 * seed + 1, candidate_rows), config)
    features, target = modeling.prepare(holdout, config)
    predictions = {
        name: modeling.predict_for_metric(model, features, config.task)
        for name, model in (("candidate", candidate), ("champion", champion))
    }
    scores = {name: modeling.compute_metrics(target, p, config.task) for name, p in predictions.items()}
    seeded = config.promotion.model_copy(update={"seed": seed})
    comparisons = compare(
        {"rmse": False},
        "regression",
        target.to_numpy(),
        predictions["candidate"],
        predictions["champion"],
        resamples=seeded.resamples,
        confidence=seeded.confidence,
        seed=seeded.seed,
    )
    decision = decide(config, scores["candidate"], scores["champion"], "1", comparisons)
    gain = relative_improvement(scores["candidate"]["rmse"], scores["champion"]["rmse"], greater_is_better=False)
    return decision, gain


def test_an_a_a_pair_is_rarely_promoted_and_far_less_than_by_point_estimates(
    synth: SimpleNamespace, tmp_path: Path
) -> None:
    config = _config(synth, tmp_path, rule="superiority", min_improvement=0.0)
    results = [_trial(synth, config, seed, champion_rows=400) for seed in range(TRIALS)]
    promoted = sum(decision.promoted for decision, _ in results) / TRIALS
    by_point = sum(gain > 0 for _, gain in results) / TRIALS  # the old gate without a margin
    by_point_1pct = sum(gain >= 0.01 for _, gain in results) / TRIALS  # the old gate with the demo's 1%
    print(
        f"\nA/A over {TRIALS} trials: the interval gate promoted {promoted:.1%}; the point-estimate gate "
        f"promoted {by_point:.1%} (any gain) and {by_point_1pct:.1%} (a 1% gain)"
    )
    assert promoted <= MAX_FALSE_PROMOTIONS, f"{promoted:.1%} of A/A candidates promoted"
    assert by_point >= 0.3, "the A/A pairs should fool a point-estimate gate often: are they really A/A?"
    assert promoted < by_point_1pct


def test_a_clearly_better_candidate_is_promoted(synth: SimpleNamespace, tmp_path: Path) -> None:
    config = _config(synth, tmp_path, rule="superiority", min_improvement=0.01)
    decisions = [_trial(synth, config, seed, champion_rows=20)[0] for seed in range(10)]
    assert all(d.promoted for d in decisions), [d.reason for d in decisions if not d.promoted]
    assert all("clears the required 1.0%" in d.reason for d in decisions)


def test_non_inferiority_promotes_an_equal_fresher_model_and_rejects_a_clearly_worse_one(
    synth: SimpleNamespace, tmp_path: Path
) -> None:
    config = _config(synth, tmp_path, rule="non_inferiority", margin=0.1)
    equal = [_trial(synth, config, seed, champion_rows=400)[0] for seed in range(20)]
    assert sum(d.promoted for d in equal) >= 18, [d.reason for d in equal if not d.promoted]
    worse = [_trial(synth, config, seed, champion_rows=400, candidate_rows=20)[0] for seed in range(5)]
    assert not any(d.promoted for d in worse), [d.reason for d in worse if d.promoted]
    assert all("may be worse by more than the allowed 10.0%" in d.reason for d in worse)


def test_better_overall_but_clearly_worse_on_one_large_slice_is_rejected_naming_it(
    synth: SimpleNamespace, tmp_path: Path
) -> None:
    config = _config(
        synth,
        tmp_path,
        rule="superiority",
        min_improvement=0.01,
        slices={"columns": ["region"], "min_rows": 100, "margin": 0.05},
    )
    rule = config.promotion
    for seed in range(3):
        stale = _sample(synth, range(4), 2 * seed, 400)
        stale["y"] -= 1.0  # the level moved since the champion trained
        fresh = _sample(synth, range(4), 2 * seed + 1, 400)
        fresh.loc[fresh["region"] == "west", "y"] += 1.6  # a broken feed for one region
        holdout = synth.week(50, 1500, seed=10_000 + seed)
        features, target = modeling.prepare(holdout, config)
        candidate, champion = (
            modeling.predict_for_metric(modeling.fit(frame, config), features, config.task)
            for frame in (fresh, stale)
        )
        y = target.to_numpy()
        bootstrap = {"resamples": rule.resamples, "confidence": rule.confidence, "seed": seed}
        comparisons = compare({"rmse": False}, "regression", y, candidate, champion, **bootstrap)
        slices = compare_slices(
            "rmse",
            False,
            "regression",
            y,
            candidate,
            champion,
            {"region": holdout["region"].astype(str).to_numpy()},
            min_rows=rule.slices.min_rows,
            margin=rule.slices.margin,
            alpha=rule.slices.alpha,
            **bootstrap,
        )
        broken = compatibility("regression", y, candidate, champion, **bootstrap)
        scores = {"rmse": comparisons["rmse"].candidate}, {"rmse": comparisons["rmse"].champion}
        decision = decide(config, *scores, "1", comparisons, compatibility=broken, slices=slices)
        assert comparisons["rmse"].improvement_low > 0.01, "the candidate should be clearly better overall"
        assert not decision.promoted
        assert "clears the required 1.0%; breaks " in decision.reason
        assert "; but slice region = west regresses: rmse " in decision.reason
        assert [s.value for s in decision.slices if s.status == "regressed"] == ["west"]
