"""ManagerService over gRPC: converts messages, calls the workflow manager, maps errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, assert_never

import grpc

from daemon.errors import NodeError, NotFoundError
from daemon.rpc.v1 import common_pb2, manager_pb2, manager_pb2_grpc
from daemon.transport import convert
from daemon.transport.access import AccessPolicy, Caller, current_caller
from daemon.transport.errors import maps_errors, status_for
from manager_node.live_logs import AttemptStarted, Data, Ended, Note, Piece, Skipped
from manager_node.manager import WorkflowManager
from manager_node.ownership import check_may_see, may_see
from manager_node.store import ManagerStore

# The rule's name for FollowTaskLog (daemon/transport/access.py), asked again while it goes.
FOLLOW_METHOD = (
    f"/{manager_pb2.DESCRIPTOR.services_by_name['ManagerService'].full_name}/FollowTaskLog"
)
# A follow asks the rule again with each piece it sends, and this often while none goes: a
# person revoked meanwhile stops following within it, not when the task ends.
FOLLOW_RECHECK_SECONDS = 2.0
# Follows one person (or node) keeps open at once: each is a coroutine and a slot here.
FOLLOWS_PER_CALLER = 16

Refusal = tuple[grpc.StatusCode, str]


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ManagerServicer(manager_pb2_grpc.ManagerServiceServicer):
    def __init__(self, manager: WorkflowManager, store: ManagerStore, policy: AccessPolicy) -> None:
        self._manager = manager
        self._store = store
        self._policy = policy
        self._follows: Counter[str] = Counter()  # open follows by who follows

    async def _own(self, workflow_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Raises unless the caller may see and act on the workflow: its owner, an admin, or
        this node's own owner."""
        await check_may_see(self._store, workflow_id, current_caller())

    @maps_errors
    async def SubmitWorkflow(
        self,
        request: manager_pb2.SubmitWorkflowRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.SubmitWorkflowRequest, manager_pb2.SubmitWorkflowReply
        ],
    ) -> manager_pb2.SubmitWorkflowReply:
        submitted = await self._manager.submit(
            request.workflow_toml,
            dict(request.overrides),
            [convert.file_ref_from_proto(ref) for ref in request.files],
            [convert.inline_file_from_proto(f) for f in request.inline_files],
            owner=current_caller().owner,
        )
        return convert.submitted_to_proto(submitted)

    async def WatchWorkflow(
        self,
        request: manager_pb2.WatchWorkflowRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.WatchWorkflowRequest, manager_pb2.WorkflowEvent
        ],
    ) -> AsyncIterator[manager_pb2.WorkflowEvent]:
        try:
            await self._own(request.workflow_id, context)
        except NodeError as error:
            await context.abort(status_for(error), str(error))
        async for update in self._manager.watch(request.workflow_id, request.since):
            yield convert.workflow_update_to_proto(update)

    @maps_errors
    async def GetTaskLog(
        self,
        request: manager_pb2.GetTaskLogRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.GetTaskLogRequest, manager_pb2.GetTaskLogReply
        ],
    ) -> manager_pb2.GetTaskLogReply:
        await self._own(request.workflow_id, context)
        found = await self._manager.task_log(
            request.workflow_id, request.task, request.stream, request.attempt
        )
        return manager_pb2.GetTaskLogReply(
            task_id=found.task_id,
            name=found.name,
            state=found.state,
            content=found.content,
            note=found.note,
            attempt=found.attempt,
            attempts=found.attempts,
        )

    async def FollowTaskLog(
        self,
        request: manager_pb2.FollowTaskLogRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.FollowTaskLogRequest, manager_pb2.TaskLogPiece
        ],
    ) -> AsyncIterator[manager_pb2.TaskLogPiece]:
        caller = current_caller()
        try:
            await self._own(request.workflow_id, context)
            with self._counted(caller):
                pieces = self._manager.follow_log(request.workflow_id, request.task, request.stream)

                def refusal() -> Refusal | None:
                    return self._policy.refusal(FOLLOW_METHOD, caller)

                async for piece in _while_allowed(pieces, refusal):
                    yield _piece_to_proto(piece)
        except NodeError as error:
            await context.abort(status_for(error), str(error))
        except _Refused as refused:
            await context.abort(refused.code, refused.message)

    @contextlib.contextmanager
    def _counted(self, caller: Caller) -> Iterator[None]:
        """One more follow of `caller`'s, refused beyond FOLLOWS_PER_CALLER."""
        identity = caller.identity
        # A person's follows count together, whichever of their credentials they use.
        who = (identity.user or identity.node_id) if identity is not None else ""
        if self._follows[who] >= FOLLOWS_PER_CALLER:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{caller.describe()} follows {FOLLOWS_PER_CALLER} task logs at once already: "
                "end one (Ctrl-C its `vcnode logs -f`) before following another",
            )
        self._follows[who] += 1
        try:
            yield
        finally:
            self._follows[who] -= 1
            if not self._follows[who]:
                del self._follows[who]

    @maps_errors
    async def PushTaskLog(
        self,
        request: manager_pb2.PushTaskLogRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.PushTaskLogRequest, manager_pb2.PushTaskLogReply
        ],
    ) -> manager_pb2.PushTaskLogReply:
        followed = await self._manager.push_log(
            current_caller(),
            request.task_id,
            request.attempt,
            convert.log_chunks_from_proto(request),
            request.final,
        )
        return manager_pb2.PushTaskLogReply(followed=followed)

    @maps_errors
    async def ExplainTasks(
        self,
        request: manager_pb2.ExplainTasksRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.ExplainTasksRequest, manager_pb2.ExplainTasksReply
        ],
    ) -> manager_pb2.ExplainTasksReply:
        await self._own(request.workflow_id, context)
        explained, unknown = await self._manager.explain(request.workflow_id, request.task)
        return manager_pb2.ExplainTasksReply(
            tasks=[convert.explanation_to_proto(e) for e in explained], pool_unknown=unknown
        )

    @maps_errors
    async def GetWorkflowStatus(
        self,
        request: manager_pb2.GetWorkflowStatusRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.GetWorkflowStatusRequest, manager_pb2.WorkflowStatus
        ],
    ) -> manager_pb2.WorkflowStatus:
        await self._own(request.workflow_id, context)
        found = await self._store.workflows(request.workflow_id, request.task)
        if not found:
            raise NotFoundError(f"no workflow {request.workflow_id!r} on this manager")
        if request.task and not found[0].tasks:
            raise NotFoundError(f"workflow {request.workflow_id} has no task {request.task[:80]!r}")
        return convert.workflow_status_to_proto(found[0])

    @maps_errors
    async def GetResults(
        self,
        request: manager_pb2.GetResultsRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.GetResultsRequest, manager_pb2.GetResultsReply
        ],
    ) -> manager_pb2.GetResultsReply:
        await self._own(request.workflow_id, context)
        found = await self._store.workflows(request.workflow_id)
        if not found:
            raise NotFoundError(f"no workflow {request.workflow_id!r} on this manager")
        files = await self._store.files(request.workflow_id, "result")
        return manager_pb2.GetResultsReply(files=[convert.file_ref_to_proto(f) for f in files])

    @maps_errors
    async def CancelWorkflow(
        self,
        request: manager_pb2.CancelWorkflowRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.CancelWorkflowRequest, manager_pb2.CancelWorkflowReply
        ],
    ) -> manager_pb2.CancelWorkflowReply:
        await self._own(request.workflow_id, context)
        cancelled = await self._manager.cancel(request.workflow_id)
        return manager_pb2.CancelWorkflowReply(cancelled_tasks=cancelled)

    @maps_errors
    async def DeleteWorkflow(
        self,
        request: manager_pb2.DeleteWorkflowRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.DeleteWorkflowRequest, manager_pb2.DeleteWorkflowReply
        ],
    ) -> manager_pb2.DeleteWorkflowReply:
        await self._own(request.workflow_id, context)
        deleted = await self._manager.delete(request.workflow_id)
        return manager_pb2.DeleteWorkflowReply(
            deleted_blobs=deleted.blobs, freed_bytes=deleted.freed_bytes
        )

    @maps_errors
    async def ResumeWorkflow(
        self,
        request: manager_pb2.ResumeWorkflowRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.ResumeWorkflowRequest, manager_pb2.SubmitWorkflowReply
        ],
    ) -> manager_pb2.SubmitWorkflowReply:
        await self._own(request.workflow_id, context)
        resumed = await self._manager.resume(request.workflow_id)
        return convert.submitted_to_proto(resumed)

    @maps_errors
    async def GetImageArchive(
        self,
        request: manager_pb2.GetImageArchiveRequest,
        context: grpc.aio.ServicerContext[manager_pb2.GetImageArchiveRequest, common_pb2.FileRef],
    ) -> common_pb2.FileRef:
        archive = await self._manager.image_archive(
            request.image, request.image_id, current_caller()
        )
        return convert.file_ref_to_proto(archive)

    @maps_errors
    async def ListWorkflows(
        self,
        request: manager_pb2.ListWorkflowsRequest,
        context: grpc.aio.ServicerContext[
            manager_pb2.ListWorkflowsRequest, manager_pb2.ListWorkflowsReply
        ],
    ) -> manager_pb2.ListWorkflowsReply:
        caller = current_caller()
        # Counts, not tasks: a list of every task of every workflow outgrew a message at a
        # few hundred thousand tasks (`vcnode status WF` pages a workflow's own). Oldest first.
        workflows = [
            workflow
            for workflow in reversed(await self._store.summaries())
            if may_see(workflow.owner, caller)
        ]
        return manager_pb2.ListWorkflowsReply(
            workflows=[convert.workflow_status_to_proto(w) for w in workflows]
        )


async def _while_allowed(
    pieces: AsyncGenerator[Piece, None], refusal: Callable[[], Refusal | None]
) -> AsyncIterator[Piece]:
    """`pieces`, for as long as `refusal` says nothing: asked before each piece goes, and
    every FOLLOW_RECHECK_SECONDS while none comes; raises _Refused when it says something."""

    async def next_piece() -> Piece | None:
        return await anext(pieces, None)

    waiting: asyncio.Task[Piece | None] | None = None
    try:
        while True:
            if waiting is None:
                waiting = asyncio.get_running_loop().create_task(next_piece())
            # Not wait_for: a timeout must not cancel the follow half way through a piece.
            done, _ = await asyncio.wait({waiting}, timeout=FOLLOW_RECHECK_SECONDS)
            refused = refusal()
            if refused is not None:
                raise _Refused(*refused)
            if not done:
                continue
            piece, waiting = waiting.result(), None
            if piece is None:
                return
            yield piece
    finally:
        if waiting is not None and not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        await pieces.aclose()  # the follow lets go of its task at once


def _piece_to_proto(piece: Piece) -> manager_pb2.TaskLogPiece:
    match piece:
        case AttemptStarted(task_id, attempt, volunteer_id):
            return manager_pb2.TaskLogPiece(
                attempt=manager_pb2.TaskLogAttempt(
                    task_id=task_id, attempt=attempt, volunteer_id=volunteer_id
                )
            )
        case Data(content):
            return manager_pb2.TaskLogPiece(data=content)
        case Skipped(count):
            return manager_pb2.TaskLogPiece(skipped=count)
        case Note(text):
            return manager_pb2.TaskLogPiece(note=text)
        case Ended(task_id, name, state, error):
            return manager_pb2.TaskLogPiece(
                end=manager_pb2.TaskLogEnd(task_id=task_id, name=name, state=state, error=error)
            )
        case unknown:
            assert_never(unknown)
