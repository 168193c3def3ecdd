"""Small, cursor-based sensors: promotion (this issue), new data and gate-failure retraining (later)."""

from sensors.promotion import promotion_sensor

all_sensors = [promotion_sensor]
