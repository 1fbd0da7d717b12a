"""Notifiers of the retraining platform (Airflow's notifier interface)."""
