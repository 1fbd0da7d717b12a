"""``training.device: cuda`` on a real GPU: the demo model trained by xgboost on the GPU, as the trainer trains it.

These run where an NVIDIA GPU is visible and skip elsewhere (CI has none). ``bench/README.md`` says where they
last ran for real and how to run them on a GPU machine.
"""

from __future__ import annotations

import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from retrainer import modeling
from retrainer.config import ProjectConfig

pytestmark = pytest.mark.skipif(
    shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU: nvidia-smi is not on this machine"
)


def _on(config: ProjectConfig, device: str) -> ProjectConfig:
    return config.model_copy(update={"training": config.training.model_copy(update={"device": device})})


@pytest.fixture(scope="module")
def fitted(demo_weeks: SimpleNamespace) -> SimpleNamespace:
    config, split = demo_weeks.config, demo_weeks.split
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gpu = modeling.fit_on_device(split.train, _on(config, "cuda"))
    cpu = modeling.fit_on_device(split.train, _on(config, "cpu"))
    return SimpleNamespace(config=config, holdout=split.holdout, gpu=gpu, cpu=cpu, warnings=caught)


def test_xgboost_trains_on_the_gpu_without_falling_back_to_the_cpu(fitted: SimpleNamespace) -> None:
    assert fitted.gpu.device.startswith("cuda"), fitted.gpu.device
    assert not [w for w in fitted.warnings if "GPU" in str(w.message)], [str(w.message) for w in fitted.warnings]
    assert fitted.cpu.device == "cpu"


def test_the_gpu_model_predicts_on_the_cpu(fitted: SimpleNamespace) -> None:
    estimator = fitted.gpu.pipeline.named_steps["estimator"]
    assert estimator.get_params()["device"] == "cpu"
    features, _ = modeling.prepare(fitted.holdout, fitted.config)
    assert np.isfinite(fitted.gpu.pipeline.predict(features)).all()


def test_the_gpu_model_is_as_good_as_the_cpu_model_on_the_same_held_out_rows(fitted: SimpleNamespace) -> None:
    gpu = modeling.score(fitted.gpu.pipeline, fitted.holdout, fitted.config)
    cpu = modeling.score(fitted.cpu.pipeline, fitted.holdout, fitted.config)
    # Not the same trees: the GPU draws the rows of `subsample` with its own generator. Equally good, though
    # (on an H100: RMSE 14.26 on the GPU, 14.67 on the CPU).
    assert gpu["rmse"] < cpu["rmse"] * 1.05
    assert gpu["rmse"] < fitted.config.promotion.floor
