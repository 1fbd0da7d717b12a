"""Airflow glue of the retraining platform, laid out like a small provider.

- ``hooks``: clients of external systems (MLflow), configured from Airflow connections.
- ``operators``, ``sensors``, ``triggers``: the Airflow-side pieces that wrap the ``retrainer`` package.

The platform's logic lives in ``retrainer`` (under ``include/``), which never imports Airflow.
"""
