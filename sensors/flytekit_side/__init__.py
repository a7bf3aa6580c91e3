"""Workflow-side declarations of this service's sensors, for flytekit (``pip install 'flyte-connector-service[flytekit]'``).

These are flytekit ``BaseSensor`` subclasses: a workflow author declares a task with them, and
the template flytekit serializes names this module path, which the service's sensors accept
as an alias. The service never imports this package (it needs flytekit); it is the other half
of the contract, shipped here so both halves change together.
"""
