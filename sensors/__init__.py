"""Sensors: conditions polled by the sensor engine, one poke per GetTask."""

from sensors.base import BaseSensor
from sensors.engine import SensorEngine, SensorMetadata

__all__ = ["BaseSensor", "SensorEngine", "SensorMetadata"]
