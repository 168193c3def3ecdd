"""Small, cursor-based sensors, each per model: model files, promotion, new data and gate-failure retraining."""

from sensors.gate_failure import gate_failure_sensor
from sensors.model_files import model_files_sensor
from sensors.new_data import new_data_sensor
from sensors.promotion import promotion_sensor
from sensors.stage_automation import stage_automation_sensor

all_sensors = [model_files_sensor, promotion_sensor, new_data_sensor, gate_failure_sensor, stage_automation_sensor]
