"""The ``runs/submit`` body (Jobs API 2.2, multi-task ``tasks[]`` form) a template describes; no I/O.

flytekitplugins-spark puts the SparkJob dict in ``custom``: ``databricksConf`` is the job
settings the user wrote, in the legacy single-task shape (``new_cluster`` or
``existing_cluster_id`` beside the run's keys) or serverless (``environments`` +
``environment_key``). flytekit's connector sends the legacy body (deprecated; the 2.2 API and
the emulator refuse it); here the same settings become one task of a ``tasks[]`` body, with
what flytekit adds kept as it adds it: the task runs ``spark_python_task`` with flytetools'
entrypoint from ``git_source`` (unless the user named ``python_file``/``git_source``) and the
container's args (rendered by propeller) as its parameters, or ``notebook_task`` for
``notebookPath``; a new cluster gets the container's image, ``sparkConf`` and env vars.

Numbers arrive as doubles (a Struct): integral ones go back to integers (``num_workers: 1``,
not ``1.0``, which flytekit sends).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from flyteidl.core import tasks_pb2

from connector_service import InvalidRequestError, clip
from connectors._literal_values import integral_numbers

__all__ = ["build_submit_body", "is_flyte2", "template_conf"]

WHO = "databricks"
FAIL_ON_ERROR = "FLYTE_FAIL_ON_ERROR"
_FLYTETOOLS = "https://github.com/flyteorg/flytetools"
# What each generation's plugin names (flytekitplugins-spark 1.16.31, flyteplugins-databricks 2.12.1).
_FLYTEKIT_GIT = {
    "git_url": _FLYTETOOLS,
    "git_provider": "gitHub",
    "git_commit": "572298df1f971fb58c258398bd70a6372f811c96",
}
_FLYTE2_GIT = {
    "git_url": _FLYTETOOLS,
    "git_provider": "gitHub",
    "git_commit": "194364210c47c49ce66c419e8fb68d6f9c06fd7e",
}
_FLYTEKIT_ENTRYPOINT = "flytekitplugins/databricks/entrypoint.py"
_FLYTEKIT_SERVERLESS_ENTRYPOINT = "flytekitplugins/databricks/entrypoint_serverless.py"
_FLYTE2_ENTRYPOINT = "flyteplugins/databricks/entrypoint.py"

# Legacy single-task keys that belong to the task in the tasks[] form; everything else is the run's.
_TASK_KEYS = frozenset(
    {
        "new_cluster",
        "existing_cluster_id",
        "job_cluster_key",
        "libraries",
        "environment_key",
        "max_retries",
        "min_retry_interval_millis",
        "retry_on_timeout",
    }
)
_TASK_KINDS = ("spark_jar_task", "spark_submit_task", "pipeline_task", "sql_task", "dbt_task", "python_wheel_task")
_PLACEHOLDER = re.compile(r"\{\{\s*\.\w+\s*\}\}")


def is_flyte2(custom: Mapping[str, Any]) -> bool:
    """flyteplugins-databricks (Flyte 2) always writes ``custom.secrets``; flytekit never does."""
    return "secrets" in custom


def template_conf(custom: Mapping[str, Any]) -> dict[str, Any]:
    """``custom.databricksConf`` as a mutable dict, checked for shape."""
    conf = custom.get("databricksConf")
    if not isinstance(conf, Mapping):
        raise InvalidRequestError(
            f"{WHO}: custom.databricksConf is missing: the task's Databricks job settings (databricks_conf); "
            "a Spark-on-Kubernetes task (task type spark) belongs to propeller's spark plugin: route it there "
            "with default-for-task-types"
        )
    return integral_numbers(copy.deepcopy(dict(conf)))  # type: ignore[no-any-return]


def _parameters(template: tasks_pb2.TaskTemplate) -> list[str]:
    args = list(template.container.args)
    for arg in args:
        match = _PLACEHOLDER.search(arg)
        if match:
            raise InvalidRequestError(
                f"{WHO}: container.args still holds the placeholder {match.group(0)}; propeller renders them "
                "before CreateTask"
            )
    return args


def _env(template: tasks_pb2.TaskTemplate) -> dict[str, str]:
    env = {pair.key: pair.value for pair in template.container.env}
    env[FAIL_ON_ERROR] = "true"  # as flytekit: pyflyte-execute exits non-zero when the task fails
    return env


def _str_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{WHO}: {field} must be a mapping of names to values")
    return {str(k): _conf_text(v) for k, v in value.items()}


def _conf_text(value: Any) -> str:
    """A Spark conf or env value as text: ``true`` (Spark's spelling, not Python's ``True``), ``4`` not ``4.0``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(integral_numbers(value))


def _serverless(conf: dict[str, Any], key: Any, env: Mapping[str, str]) -> str:
    """Serverless compute: make sure ``environments`` has the task's environment, with Flyte's env vars."""
    key = key or "default"
    if not isinstance(key, str):
        raise InvalidRequestError(f"{WHO}: custom.databricksConf.environment_key must be a string")
    environments = conf.get("environments") or []
    if not isinstance(environments, list) or not all(isinstance(e, dict) for e in environments):
        raise InvalidRequestError(f"{WHO}: custom.databricksConf.environments must be a list of environments")
    chosen = next((e for e in environments if e.get("environment_key") == key), None)
    if chosen is None:
        chosen = {"environment_key": key, "spec": {"client": "1"}}
        environments.append(chosen)
    spec = chosen.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise InvalidRequestError(f"{WHO}: custom.databricksConf.environments[{key}].spec must be a mapping")
    field = f"custom.databricksConf.environments[{key}].spec.environment_vars"
    spec["environment_vars"] = {**_str_map(spec.get("environment_vars"), field), **env}
    conf["environments"] = environments
    return key


def _classic(task: dict[str, Any], custom: Mapping[str, Any], template: tasks_pb2.TaskTemplate) -> None:
    cluster = task.get("new_cluster")
    if cluster is None:
        return
    if not isinstance(cluster, dict):
        raise InvalidRequestError(f"{WHO}: custom.databricksConf.new_cluster must be a mapping")
    if not cluster.get("docker_image") and template.container.image:
        cluster["docker_image"] = {"url": template.container.image}
    if not cluster.get("spark_conf"):
        cluster["spark_conf"] = _str_map(custom.get("sparkConf"), "custom.sparkConf")
    field = "custom.databricksConf.new_cluster.spark_env_vars"
    cluster["spark_env_vars"] = {**_str_map(cluster.get("spark_env_vars"), field), **_env(template)}


def build_submit_body(
    template: tasks_pb2.TaskTemplate, custom: Mapping[str, Any], idempotency_token: str
) -> dict[str, Any]:
    """The ``runs/submit`` body for a template; InvalidRequestError names what is wrong with it."""
    conf = template_conf(custom)
    flyte2 = is_flyte2(custom)
    if "tasks" in conf:
        raise InvalidRequestError(
            f"{WHO}: custom.databricksConf.tasks is not supported: the connector makes the run's one task "
            "from the Flyte task (write the cluster settings beside run_name, as for runs/submit's single task)"
        )
    for kind in ("spark_python_task", "notebook_task", *_TASK_KINDS):
        if kind in conf:
            raise InvalidRequestError(
                f"{WHO}: custom.databricksConf.{kind} is not supported: the run executes the Flyte task "
                "(set python_file/git_source to change its entrypoint, or notebook_path)"
            )
    has_cluster = conf.get("existing_cluster_id") is not None or conf.get("new_cluster") is not None
    serverless = not has_cluster and bool(conf.get("environment_key") or conf.get("environments"))
    if not has_cluster and not serverless:
        raise InvalidRequestError(
            f"{WHO}: custom.databricksConf has no compute: give existing_cluster_id or new_cluster (classic), "
            "or environments/environment_key (serverless)"
        )
    if flyte2 and serverless:
        raise InvalidRequestError(
            f"{WHO}: custom.databricksConf: flyteplugins-databricks tasks need existing_cluster_id or new_cluster"
        )

    notebook = custom.get("notebookPath")
    user_git = conf.pop("git_source", None)
    python_file = conf.pop("python_file", None)
    if python_file is not None and not isinstance(python_file, str):
        raise InvalidRequestError(f"{WHO}: custom.databricksConf.python_file must be a string")
    task: dict[str, Any] = {key: conf.pop(key) for key in list(conf) if key in _TASK_KEYS}
    if serverless:
        task["environment_key"] = _serverless(conf, task.pop("environment_key", None), _env(template))
        task.pop("new_cluster", None)
    else:
        task.pop("environment_key", None)
        _classic(task, custom, template)

    body: dict[str, Any] = dict(conf)
    if notebook:
        if not isinstance(notebook, str):
            raise InvalidRequestError(f"{WHO}: custom.notebookPath must be a string")
        notebook_task: dict[str, Any] = {"notebook_path": notebook}
        params = _str_map(custom.get("notebookBaseParameters"), "custom.notebookBaseParameters")
        if params:
            notebook_task["base_parameters"] = params
        if user_git:
            notebook_task["source"] = "GIT"
            body["git_source"] = user_git
        task = {"task_key": "flyte_notebook_task", "notebook_task": notebook_task, **task}
    else:
        parameters = _parameters(template)
        if serverless:
            provider = custom.get("databricksServiceCredentialProvider")
            if provider:
                parameters.append(f"--flyte-credential-provider={provider}")
            default_file = _FLYTEKIT_SERVERLESS_ENTRYPOINT
        else:
            default_file = _FLYTE2_ENTRYPOINT if flyte2 else _FLYTEKIT_ENTRYPOINT
        spark_python_task = {"python_file": python_file or default_file, "source": "GIT", "parameters": parameters}
        body["git_source"] = user_git or (_FLYTE2_GIT if flyte2 else _FLYTEKIT_GIT)
        task = {"task_key": "flyte_task", "spark_python_task": spark_python_task, **task}

    run_name = body.get("run_name") or template.id.name or "flyte-task"
    body["run_name"] = clip(str(run_name), 4096)
    body["idempotency_token"] = idempotency_token
    body["tasks"] = [task]
    return body
