"""Sensors of the pipeline (promotion, new data, gate-failure retraining) live here."""

all_sensors: list = []
