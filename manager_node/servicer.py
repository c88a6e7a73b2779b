"""ManagerService over gRPC: converts messages, calls the store, maps errors.

Submission, watching, results and cancel arrive with task execution; until then the
generated base class answers them UNIMPLEMENTED.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc

from daemon.errors import NotFoundError
from daemon.rpc.v1 import manager_pb2, manager_pb2_grpc
from daemon.transport.errors import abort_not_available, maps_errors
from manager_node.store import ManagerStore, WorkflowRow


def _workflow_to_proto(workflow: WorkflowRow) -> manager_pb2.WorkflowStatus:
    states = Counter(task.state for task in workflow.tasks)
    return manager_pb2.WorkflowStatus(
        workflow_id=workflow.workflow_id,
        name=workflow.name,
        type=workflow.type,
        state=workflow.state,
        counts=manager_pb2.WorkflowCounts(
            queued=states["queued"],
            running=states["running"],
            completed=states["completed"],
            failed=states["failed"],
            cancelled=states["cancelled"],
            total=len(workflow.tasks),
        ),
        tasks=[
            manager_pb2.TaskStatus(
                task_id=task.task_id,
                name=task.name,
                state=task.state,
                attempts=task.attempts,
                error=task.error,
                volunteer_id=task.volunteer_id,
            )
            for task in workflow.tasks
        ],
        created_at=workflow.created_at,
        updated_at=workflow.updated_at,
    )


class ManagerServicer(manager_pb2_grpc.ManagerServiceServicer):
    def __init__(self, store: ManagerStore) -> None:
        self._store = store

    @maps_errors
    async def ListWorkflows(
        self, request: manager_pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> manager_pb2.ListWorkflowsReply:
        workflows = await self._store.workflows()
        return manager_pb2.ListWorkflowsReply(workflows=[_workflow_to_proto(w) for w in workflows])

    @maps_errors
    async def GetWorkflowStatus(
        self, request: manager_pb2.GetWorkflowStatusRequest, context: grpc.aio.ServicerContext
    ) -> manager_pb2.WorkflowStatus:
        found = await self._store.workflows(request.workflow_id)
        if not found:
            raise NotFoundError(f"no workflow {request.workflow_id!r} on this manager")
        return _workflow_to_proto(found[0])

    async def SubmitWorkflow(
        self, request: manager_pb2.SubmitWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> manager_pb2.SubmitWorkflowReply:
        await abort_not_available(context, "workflow submission")
        raise AssertionError("unreachable: abort raises")

    async def WatchWorkflow(
        self, request: manager_pb2.WatchWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[manager_pb2.WorkflowEvent]:
        await abort_not_available(context, "watching a workflow")
        yield manager_pb2.WorkflowEvent()  # unreachable: makes this a generator, as gRPC expects

    async def GetResults(
        self, request: manager_pb2.GetResultsRequest, context: grpc.aio.ServicerContext
    ) -> manager_pb2.GetResultsReply:
        await abort_not_available(context, "fetching results")
        raise AssertionError("unreachable: abort raises")

    async def CancelWorkflow(
        self, request: manager_pb2.CancelWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> manager_pb2.CancelWorkflowReply:
        await abort_not_available(context, "cancelling a workflow")
        raise AssertionError("unreachable: abort raises")
