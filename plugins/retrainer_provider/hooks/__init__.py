"""Hooks of the retraining platform."""
