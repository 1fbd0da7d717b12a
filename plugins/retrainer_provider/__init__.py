"""Airflow glue of the retraining platform, laid out like a small provider.

- ``hooks``: clients of external systems (MLflow), configured from Airflow connections.

The platform's logic lives in ``retrainer`` (under ``include/``), which never imports Airflow; DAG tasks call
its step functions. Operators, sensors and triggers join ``hooks`` here as the platform grows (training
containers, drift alerts).
"""
