"""The ticks of a project's schedule: what the DAG's timetable lists and what a replay waits for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retrainer import replay
from retrainer.config import load_config
from retrainer.schedule import cron_ticks
from retrainer.stack import REPO_ROOT


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_the_ticks_run_from_the_start_to_the_end_both_included() -> None:
    weekly = "0 3 * * 1"
    assert cron_ticks(weekly, _utc(2013, 1, 8), _utc(2013, 1, 28, 3), limit=10) == [
        _utc(2013, 1, 14, 3),
        _utc(2013, 1, 21, 3),
        _utc(2013, 1, 28, 3),
    ]
    assert cron_ticks(weekly, _utc(2013, 1, 14, 3), _utc(2013, 1, 14, 3), limit=10) == [_utc(2013, 1, 14, 3)]
    assert cron_ticks(weekly, _utc(2013, 1, 8), _utc(2013, 1, 8, 1), limit=10) == []  # ends before a tick
    with pytest.raises(ValueError, match="more than 3 ticks of '0 3 \\* \\* 1'"):
        cron_ticks(weekly, _utc(2013, 1, 8), _utc(2014, 1, 1), limit=3)


def test_the_demo_replays_its_nine_weeks() -> None:
    config = load_config(REPO_ROOT / "projects" / "flights.yaml")
    ticks = replay.scheduled_ticks(config)
    assert (len(ticks), ticks[0], ticks[-1]) == (9, _utc(2013, 1, 14, 3), _utc(2013, 3, 11, 3))
    assert replay.scheduled_ticks(config, now=_utc(2013, 1, 22)) == ticks[:2]
