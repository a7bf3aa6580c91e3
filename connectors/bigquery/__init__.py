"""BigQuery connector: ``bigquery_query_job_task`` (v0) as asynchronous BigQuery query jobs.

Jobs are inserted, read and cancelled with BigQuery's REST API (``jobs.insert``, ``jobs.get``,
``jobs.cancel``) over the service's shared httpx client, authenticated with a service-account
key the operator chose for the task's Flyte project/domain (``plugins.bigquery``, see
``settings.py``); google-auth signs the tokens and is imported on first use only.
"""

from connectors.bigquery.connector import BigQueryConnector, BigQueryJobMeta
from connectors.bigquery.settings import BigQuerySettings

__all__ = ["BigQueryConnector", "BigQueryJobMeta", "BigQuerySettings"]
