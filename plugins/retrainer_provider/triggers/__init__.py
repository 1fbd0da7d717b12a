"""Triggers of the retraining platform (they run in the Airflow triggerer)."""
