"""Emit the platform's metrics through Airflow's own metrics client (StatsD or OpenTelemetry, as configured)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrainer.metrics import Metric

log = logging.getLogger(__name__)


def emit(metrics: list[Metric]) -> None:
    """Send each metric with Airflow's ``[metrics]`` settings (nothing is sent where metrics are off)."""
    from airflow.sdk.observability.stats import Stats

    for metric in metrics:
        try:
            if metric.kind == "gauge":
                Stats.gauge(metric.name, metric.value, tags=metric.tags)
            elif metric.kind == "incr":
                Stats.incr(metric.name, int(metric.value), tags=metric.tags)
            else:
                Stats.timing(metric.name, metric.value, tags=metric.tags)
        except Exception as error:  # a metric is never worth failing a cycle for
            log.warning("metric %s not sent: %s", metric.name, error)
