"""Snowflake connector: ``snowflake`` tasks as asynchronous Snowflake queries.

Queries are submitted with snowflake-connector-python's ``execute_async`` (imported on first
use only: the ``snowflake`` extra), polled through the query-status endpoint and cancelled with
``SYSTEM$CANCEL_QUERY``. Operator settings are ``plugins.snowflake`` (see ``settings.py``).
"""

from connectors.snowflake.connector import SnowflakeConnector, SnowflakeJobMeta
from connectors.snowflake.settings import SnowflakeSettings

__all__ = ["SnowflakeConnector", "SnowflakeJobMeta", "SnowflakeSettings"]
