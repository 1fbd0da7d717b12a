"""What the Airflow worker imports once, before it forks its task processes (``[core] mp_forkserver_preload``).

Every task, and the ``local`` trainer forked from the train task, then starts with these imports done instead of
paying seconds for them each time: the steps and their libraries, the command line the trainer runs, xgboost,
and skops (which loads every model, and whose import costs about half a second on its own).

Last, it freezes what is loaded (``gc.freeze``, as Python's documentation advises before forking): the
collector of every forked process then skips these objects instead of touching, and so copying, each page of
them at every full collection (a full collection in a task: 0.29 s without, 0.02 s with).
"""

from __future__ import annotations

import contextlib
import gc
import importlib

from retrainer import trusted_models

WARM_MODULES = ("retrainer.steps", "retrainer.cli", "retrainer.forked_trainer")

for _module in WARM_MODULES:
    importlib.import_module(_module)
with contextlib.suppress(ImportError):  # an optional estimator library
    importlib.import_module("xgboost")
trusted_models.skops()
gc.freeze()
