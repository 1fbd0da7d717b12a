"""What the Airflow worker imports once, before it forks its task processes (``[core] mp_forkserver_preload``).

Every task, and the ``local`` trainer forked from the train task, then starts with these imports done instead of
paying seconds for them each time: the steps and their libraries, the command line the trainer runs, what steps
import only when they need it (below), and skops (which loads every model; its import alone takes 0.5 s).

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
# Imported by a step only when it needs them: xgboost (an optional estimator library); matplotlib and
# markdown-it for the model card that promote logs (1.3 s in a task where Python may not write bytecode
# caches, as with PYTHONDONTWRITEBYTECODE); pyarrow's dataset reader.
OPTIONAL_WARM_MODULES = (
    "xgboost",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "markdown_it",
    "pyarrow.dataset",
)

for _module in WARM_MODULES:
    importlib.import_module(_module)
for _module in OPTIONAL_WARM_MODULES:
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)
trusted_models.skops()
gc.freeze()
