"""The ``StartJobRun`` request an ``EMRServerless`` template describes (flytekitplugins-awsemrserverless); no I/O.

``custom`` is ``EMRServerless.to_dict()``: ``execution_role_arn``, ``application_id`` (an id,
or an application's *name*, which flytekit looks up), ``application_type``, a
``spark_job_driver`` or ``hive_job_driver`` in the API's own shape, ``spark_submit_parameters``
(appended to the driver's), ``configuration_overrides`` merged with
``application_configuration``, ``tags`` (over flytekit's ``Application``/``ManagedBy``),
``execution_timeout_minutes``, ``retry_policy`` and ``inject_flyte_env`` (the execution's
ids as Spark driver and executor environment variables).

Not supported, refused naming the field: "Pythonic" mode (no job driver: flytekit uploads its
own entrypoint to S3 and runs the task's container there), creating an application from
``application_name`` when none has that name, and ``sync_image`` updates of an application.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from connector_service import InvalidRequestError, clip
from connectors._literal_values import integral_numbers

__all__ = ["FLYTE_TAGS", "JobPlan", "job_plan"]

WHO = "emr_serverless"
FLYTE_TAGS = {"Application": "flyte", "ManagedBy": "flyte-connector"}
_APPLICATION_ID = re.compile(r"^[0-9a-z]{1,64}$")
_APPLICATION_NAME = re.compile(r"^[A-Za-z0-9._/#-]{1,64}$")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_UNSAFE_ENV = re.compile(r"[\s='\"]")


class JobPlan:
    """The application (id or name) and the job run's parameters, without ``applicationId``/``clientToken``."""

    def __init__(self, application: str, by_name: bool, params: dict[str, Any]) -> None:
        self.application = application
        self.by_name = by_name
        self.params = params


def _mapping(custom: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    value = custom.get(field)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{WHO}: custom.{field} must be an object")
    return dict(value)


def _flyte_env(task_execution_metadata: Any) -> dict[str, str]:
    """The execution's ids as flytekit's connector injects them (FLYTE_INTERNAL_*)."""
    if task_execution_metadata is None:
        return {}
    tid = task_execution_metadata.task_execution_id
    node = tid.node_execution_id
    wf = node.execution_id
    env = {
        "FLYTE_INTERNAL_TASK_PROJECT": tid.task_id.project,
        "FLYTE_INTERNAL_TASK_DOMAIN": tid.task_id.domain,
        "FLYTE_INTERNAL_TASK_NAME": tid.task_id.name,
        "FLYTE_INTERNAL_TASK_VERSION": tid.task_id.version,
        "FLYTE_INTERNAL_NODE_ID": node.node_id,
        "FLYTE_INTERNAL_EXECUTION_ID": wf.name,
        "FLYTE_INTERNAL_EXECUTION_PROJECT": wf.project,
        "FLYTE_INTERNAL_EXECUTION_DOMAIN": wf.domain,
        "FLYTE_INTERNAL_TASK_RETRY_ATTEMPT": str(tid.retry_attempt),
    }
    return {k: v for k, v in env.items() if v and not _UNSAFE_ENV.search(v)}


def _driver(custom: Mapping[str, Any], task_execution_metadata: Any) -> dict[str, Any]:
    spark, hive = _mapping(custom, "spark_job_driver"), _mapping(custom, "hive_job_driver")
    kind = custom.get("application_type", "SPARK")
    if kind not in ("SPARK", "HIVE"):
        raise InvalidRequestError(f"{WHO}: custom.application_type must be SPARK or HIVE, got {clip(str(kind), 20)!r}")
    if spark and hive:
        raise InvalidRequestError(f"{WHO}: custom.spark_job_driver and custom.hive_job_driver are exclusive")
    if hive is not None:
        if not isinstance(hive.get("query"), str) or not hive["query"]:
            raise InvalidRequestError(f"{WHO}: custom.hive_job_driver.query is required")
        return {"hive": hive}
    if spark is None:
        raise InvalidRequestError(
            f"{WHO}: custom.spark_job_driver (or hive_job_driver) is required: the connector runs script-mode "
            "jobs; flytekit's Pythonic mode (the task's own code on EMR) is not supported"
        )
    if not isinstance(spark.get("entryPoint"), str) or not spark["entryPoint"]:
        raise InvalidRequestError(f"{WHO}: custom.spark_job_driver.entryPoint is required (an s3:// path)")
    args = spark.get("entryPointArguments")
    if args is not None and not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise InvalidRequestError(f"{WHO}: custom.spark_job_driver.entryPointArguments must be a list of strings")
    parts = [spark.get("sparkSubmitParameters"), custom.get("spark_submit_parameters")]
    if custom.get("inject_flyte_env", True):
        env = _flyte_env(task_execution_metadata)
        parts += [
            f"--conf spark.emr-serverless.driverEnv.{k}={v} --conf spark.executorEnv.{k}={v}" for k, v in env.items()
        ]
    if not all(p is None or isinstance(p, str) for p in parts):
        raise InvalidRequestError(f"{WHO}: custom.spark_submit_parameters must be a string")
    joined = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    if joined:
        spark["sparkSubmitParameters"] = joined
    return {"sparkSubmit": spark}


def _overrides(custom: Mapping[str, Any]) -> dict[str, Any] | None:
    overrides = _mapping(custom, "configuration_overrides") or {}
    extra = custom.get("application_configuration")
    if extra is not None:
        if not isinstance(extra, list):
            raise InvalidRequestError(f"{WHO}: custom.application_configuration must be a list")
        overrides["applicationConfiguration"] = [*overrides.get("applicationConfiguration", []), *extra]
    return overrides or None


def job_plan(custom: Mapping[str, Any], job_name: str, task_execution_metadata: Any) -> JobPlan:
    """The application and the StartJobRun parameters; INVALID_ARGUMENT naming the field that is wrong."""
    role = custom.get("execution_role_arn")
    if not isinstance(role, str) or not _ROLE.match(role):
        raise InvalidRequestError(f"{WHO}: custom.execution_role_arn must be an IAM role ARN")
    application, name = custom.get("application_id"), custom.get("application_name")
    if application:
        if not isinstance(application, str) or not (
            _APPLICATION_ID.match(application) or _APPLICATION_NAME.match(application)
        ):
            raise InvalidRequestError(f"{WHO}: custom.application_id is not an application id or name")
        by_name = not _APPLICATION_ID.match(application)
    elif name:
        if not isinstance(name, str) or not _APPLICATION_NAME.match(name):
            raise InvalidRequestError(f"{WHO}: custom.application_name is not an application name")
        application, by_name = name, True
    else:
        raise InvalidRequestError(f"{WHO}: custom.application_id (or application_name) is required")
    timeout = integral_numbers(custom.get("execution_timeout_minutes", 60))
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        raise InvalidRequestError(f"{WHO}: custom.execution_timeout_minutes must be a whole number of minutes >= 1")
    tags = _mapping(custom, "tags") or {}
    if not all(isinstance(v, str) for v in tags.values()):
        raise InvalidRequestError(f"{WHO}: custom.tags must map names to strings")
    params: dict[str, Any] = {
        "executionRoleArn": role,
        "jobDriver": integral_numbers(_driver(custom, task_execution_metadata)),
        "executionTimeoutMinutes": timeout,
        "tags": {**FLYTE_TAGS, **tags},
        "name": job_name,
    }
    overrides = _overrides(custom)
    if overrides:
        params["configurationOverrides"] = integral_numbers(overrides)
    retry = _mapping(custom, "retry_policy")
    if retry:
        params["retryPolicy"] = integral_numbers(retry)
    return JobPlan(str(application), by_name, params)
