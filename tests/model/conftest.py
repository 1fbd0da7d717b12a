"""The demo model's data: the flights project and its first two real weeks, held out as a cycle holds them out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from retrainer import modeling
from retrainer.config import load_config
from retrainer.demo import DEMO_START, flights_with_weather, week_frame, week_starts

FLIGHTS_CONFIG = Path(__file__).resolve().parents[2] / "projects" / "flights.yaml"


@pytest.fixture(scope="session")
def demo_weeks() -> SimpleNamespace:
    """``config`` (projects/flights.yaml) and ``split``: two demo weeks, the newest 20 % held out."""
    config = load_config(FLIGHTS_CONFIG)
    all_flights = flights_with_weather()
    columns = list(config.schema_.columns)
    frame = pd.concat([week_frame(all_flights, monday, columns) for monday in week_starts(DEMO_START, 2)])
    return SimpleNamespace(config=config, split=modeling.split_holdout(frame.reset_index(drop=True), config))
