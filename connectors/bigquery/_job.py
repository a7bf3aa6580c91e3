"""The ``jobs.insert`` body a template describes; no I/O.

flytekitplugins-bigquery (and Flyte 2's plugin) serialize the user's ``QueryJobConfig`` into
``custom`` (its ``query`` part: ``useLegacySql``, ``maximumBytesBilled``, ``priority``,
``destinationTable``, ``writeDisposition``...) beside ``ProjectID``, ``Location`` and
``Domain``, and then their connectors ignore it. Here it is the job's ``configuration.query``,
with the SQL from ``sql.statement`` and the inputs as named parameters. ``useLegacySql`` is false
unless the config says otherwise (the REST API's own default is legacy SQL; the Python client's
is not). ``labels`` and ``jobTimeoutMs``, job-level keys, are honoured when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector_service import InvalidRequestError, clip
from connectors._literal_values import integral_numbers

__all__ = ["OWN_KEYS", "build_job", "destination_project"]

WHO = "bigquery"
OWN_KEYS = frozenset({"ProjectID", "Location", "Domain", "secrets"})
_JOB_KEYS = frozenset({"labels", "jobTimeoutMs"})
_REFUSED = {"dryRun": "a dry run never produces results", "query": "the SQL comes from sql.statement"}


def build_job(
    job_id: str,
    project: str,
    location: str,
    statement: str,
    parameters: list[dict[str, Any]],
    custom: Mapping[str, Any],
) -> dict[str, Any]:
    query: dict[str, Any] = {}
    job_level: dict[str, Any] = {}
    for key, value in custom.items():
        if key in OWN_KEYS or key == "queryParameters":
            continue
        if key in _REFUSED:
            raise InvalidRequestError(f"{WHO}: custom.{key} is not allowed: {_REFUSED[key]}")
        (job_level if key in _JOB_KEYS else query)[key] = integral_numbers(value)
    labels = job_level.get("labels")
    if labels is not None and (not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values())):
        raise InvalidRequestError(f"{WHO}: custom.labels must map label names to strings")
    query["query"] = statement
    query.setdefault("useLegacySql", False)
    if parameters:
        query["parameterMode"] = "NAMED"
        query["queryParameters"] = parameters
    reference = {"projectId": project, "jobId": job_id}
    if location:
        reference["location"] = location
    return {"jobReference": reference, "configuration": {"query": query, **job_level}}


def destination_project(custom: Mapping[str, Any]) -> str | None:
    """The project of ``destinationTable``, when the config names one."""
    table = custom.get("destinationTable")
    if table is None:
        return None
    if not isinstance(table, Mapping) or not isinstance(table.get("projectId"), str):
        raise InvalidRequestError(f"{WHO}: custom.destinationTable must have projectId, datasetId and tableId")
    return clip(table["projectId"], 100)
