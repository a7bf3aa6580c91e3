"""Workflow-side declarations of this service's sensors, for flytekit.

Install with ``pip install 'flyte-connector-service[flytekit]'`` in the workflow's image. These
are flytekit ``BaseSensor`` subclasses: a workflow author declares a task with them, and the
template flytekit serializes names their module path, which the service's sensors accept as
an alias. The service never imports this package (it needs flytekit); it is the other half of
the contract, shipped here so both halves change together.
"""

from sensors.flytekit_side.http_sensor import HttpSensor
from sensors.flytekit_side.sql_sensor import SqlSensor
from sensors.flytekit_side.time_sensors import DateTimeSensor, TimeDeltaSensor

__all__ = ["DateTimeSensor", "HttpSensor", "SqlSensor", "TimeDeltaSensor"]
