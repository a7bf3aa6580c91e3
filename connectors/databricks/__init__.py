"""Databricks connectors: ``databricks`` and ``spark`` (v0) tasks as one-time Databricks runs.

Runs are submitted with the Jobs API 2.2 (``runs/submit`` in its ``tasks[]`` form, ``runs/get``,
``runs/cancel``) over the service's shared httpx client, to the workspace the operator set for
the task's Flyte project/domain (``plugins.databricks``, see ``settings.py``).
"""

from connectors.databricks.connector import DatabricksConnector, DatabricksRunMeta, DatabricksSparkConnector
from connectors.databricks.settings import DatabricksSettings

__all__ = ["DatabricksConnector", "DatabricksRunMeta", "DatabricksSettings", "DatabricksSparkConnector"]
