"""Measurement: stage timers, run results, environment."""
