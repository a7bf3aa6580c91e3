"""Workflow-side ``SqlSensor`` for flytekit: declare the task; the service's ``sensors.sql_sensor`` runs it.

Example::

    from sensors.flytekit_side.sql_sensor import SqlSensor

    wait_for_partition = SqlSensor(
        name="wait_for_partition",
        connection="warehouse",                  # a name the operator configured in the service
        sql="SELECT count(*) > 0 FROM events WHERE day = $1 AND source = $2",
        timeout=datetime.timedelta(hours=6),     # the task's timeout
    )

    @workflow
    def wf(day: str):
        wait_for_partition(parameters=[day, "web"]) >> load(day=day)

The task never carries a DSN or a password: ``connection`` names one of the databases in the
service's ``plugins.sql_sensor.connections``. ``poke``'s signature is the task's input:
``parameters: list[str] | None`` (positional: PostgreSQL ``$1, $2, ...``, SQLite ``?``), always
bound, never formatted into the SQL; the service converts each string to the type PostgreSQL
infers for its parameter. A list of strings is what a workflow can build from its own values
(promises); fixed parameters, also named ones for SQLite (``:name``), may be given to the
constructor as ``parameters=`` instead, and the input, when given, replaces them.

The query runs only in the connector service (it alone knows the connections), so ``poke``
raises locally. Only flytekit (and the standard library) is imported here, never the service.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
from typing import Any

from flytekit.sensor.base_sensor import BaseSensor

__all__ = ["SqlSensor", "SqlSensorConfig"]


@dataclasses.dataclass
class SqlSensorConfig:
    """What ``sensor_config`` carries; the keys are the ones the service's SqlSensor reads."""

    connection: str
    sql: str
    parameters: list[Any] | dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: typing.Mapping[str, Any]) -> SqlSensorConfig:
        return cls(connection=d["connection"], sql=d["sql"], parameters=d.get("parameters"))


class SqlSensor(BaseSensor):
    """Waits until ``sql`` on the service's connection ``connection`` returns a truthy first cell.

    Done when the first column of the first row is truthy; not yet when there is no row or it
    is NULL, false, 0, empty, or text spelling false (``0 f false n no off``).
    """

    def __init__(
        self,
        name: str,
        connection: str | None = None,
        sql: str | None = None,
        *,
        parameters: typing.Sequence[Any] | typing.Mapping[str, Any] | None = None,
        timeout: datetime.timedelta | int | None = None,
        config: typing.Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # flytekit's local sensor engine re-creates the sensor as cls("sensor", config=sensor_config).
        if config is not None:
            restored = SqlSensorConfig.from_dict(config)
            connection = connection or restored.connection
            sql = sql or restored.sql
            parameters = parameters if parameters is not None else restored.parameters
        if not connection or not isinstance(connection, str):
            raise ValueError("SqlSensor: connection is required: the name of a connection configured in the service")
        if not sql or not isinstance(sql, str):
            raise ValueError("SqlSensor: sql is required: the query whose first cell decides")
        if parameters is not None and not isinstance(parameters, (list, tuple, dict)):
            raise ValueError("SqlSensor: parameters must be a list (positional) or a dict (named, SQLite only)")
        self._config = SqlSensorConfig(
            connection=connection,
            sql=sql,
            parameters=None
            if parameters is None
            else (dict(parameters) if isinstance(parameters, dict) else list(parameters)),
        )
        super().__init__(name=name, timeout=timeout, sensor_config=self._config, **kwargs)

    async def poke(self, parameters: list[str] | None = None) -> bool:
        raise RuntimeError(
            f"SqlSensor {self._config.connection!r}: this sensor runs in the connector service "
            "(flyte-connector-service), which alone knows the configured connections and their secrets; "
            "it cannot run locally. Run the workflow on a Flyte cluster whose propeller sends `sensor` tasks "
            "to the service."
        )
