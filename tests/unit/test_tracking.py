"""Tracking.active: what it sets for a step and puts back after."""

from __future__ import annotations

import os

import pytest

from retrainer.tracking import PROGRESS_BAR_ENV, Tracking


def test_a_step_runs_without_artifact_progress_bars_and_the_setting_is_put_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv(PROGRESS_BAR_ENV, "true")
    with Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}").active():
        from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

        assert MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is False
    assert os.environ[PROGRESS_BAR_ENV] == "true"
