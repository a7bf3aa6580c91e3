"""``echo``: a sync connector whose outputs are its inputs.

The simplest end-to-end check of a propeller set-up: if an echo task succeeds with its
inputs as outputs, discovery, routing, the sync path and output writing all work.
"""

from __future__ import annotations

from typing import Any

from flyteidl.core import literals_pb2, tasks_pb2

from connector_service import Phase, Resource, SyncConnectorBase

__all__ = ["EchoConnector", "echo_connector"]


class EchoConnector(SyncConnectorBase):
    name = "Echo Connector"

    def __init__(self, task_type_name: str = "echo", task_type_version: int = 0) -> None:
        super().__init__(task_type_name=task_type_name, task_type_version=task_type_version)

    async def do(
        self,
        task_template: tasks_pb2.TaskTemplate,
        output_prefix: str,
        inputs: literals_pb2.LiteralMap | None = None,
        **kwargs: Any,
    ) -> Resource:
        outputs = literals_pb2.LiteralMap()
        if inputs is not None:
            declared = task_template.interface.outputs.variables
            # Echo what the interface declares as outputs when it declares any, so a task
            # with inputs (x, y) and outputs (x) echoes just x; otherwise echo everything.
            for name, literal in inputs.literals.items():
                if not declared or name in declared:
                    outputs.literals[name].CopyFrom(literal)
        return Resource(phase=Phase.SUCCEEDED, outputs=outputs)


echo_connector = EchoConnector()
