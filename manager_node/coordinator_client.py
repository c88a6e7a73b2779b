"""The manager's side of the coordinator: hand over tasks, follow their events, cancel.

Tasks to hand over wait in a queue while no coordinator answers; the coordinator ignores a
task it already has, so sending one twice is harmless. Events are followed from the last
sequence number the manager stored, so a manager or coordinator restart loses none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc

from daemon.backoff import Backoff
from daemon.discovery.directory import PeerDirectory
from daemon.discovery.finder import CoordinatorFinder
from daemon.models import TaskEvent, TaskSpec, Verdict, Volunteer
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc, trust_pb2, trust_pb2_grpc
from daemon.supervision import run_together
from daemon.transport import convert
from daemon.transport.channels import open_channel
from daemon.trust.credentials import LiveCredential
from daemon.trust.pki import role_name

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 10.0
# A submission waits this long at most to learn whether the pool can run it.
POOL_QUERY_TIMEOUT_SECONDS = 3.0

EventHandler = Callable[[TaskEvent], Awaitable[None]]
# Tasks per SubmitTasks call (the coordinator's edge takes up to 1,000).
SUBMIT_BATCH = 500


class CoordinatorClient:
    def __init__(
        self,
        *,
        manager_id: str,
        explicit_address: str | None,
        directory: PeerDirectory | None,
        credential: LiveCredential,
        on_event: EventHandler,
        after_sequence: Callable[[], Awaitable[int]],
    ) -> None:
        self._manager_id = manager_id
        self._finder = CoordinatorFinder(explicit_address, directory)
        self._credential = credential
        self._on_event = on_event
        self._after_sequence = after_sequence
        self._manager_address = ""
        self._to_submit: list[TaskSpec] = []
        # (workflow id, task ids): the workflow's tasks named, or all of them if none is.
        self._to_cancel: list[tuple[str, tuple[str, ...]]] = []
        self._to_report: list[Verdict] = []
        self._work = asyncio.Event()
        self._stub: coordinator_pb2_grpc.CoordinatorServiceAsyncStub | None = None
        self._trust: trust_pb2_grpc.TrustServiceAsyncStub | None = None

    def submit(self, specs: Sequence[TaskSpec]) -> None:
        self._to_submit.extend(specs)
        self._work.set()

    async def volunteers(self) -> list[Volunteer] | None:
        """The pool as the coordinator sees it now; None while no coordinator answers."""
        if self._stub is None:
            return None
        try:
            reply = await self._stub.ListVolunteers(
                coordinator_pb2.ListVolunteersRequest(), timeout=POOL_QUERY_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            log.info("cannot ask the coordinator about its pool: %s", error.code().name)
            return None
        return [convert.volunteer_from_proto(info) for info in reply.volunteers]

    async def revoked(self) -> frozenset[str] | None:
        """The node ids the coordinator revoked; None while no coordinator answers."""
        if self._trust is None:
            return None
        try:
            reply = await self._trust.ListRevoked(
                trust_pb2.ListRevokedRequest(), timeout=POOL_QUERY_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            log.info("cannot ask the coordinator whom it revoked: %s", error.code().name)
            return None
        return frozenset(reply.node_ids)

    def cancel(self, workflow_id: str) -> None:
        """Calls the workflow's tasks off at the coordinator, ahead of any submission still
        queued; the workflow's own queued tasks are never sent."""
        self._to_submit = [spec for spec in self._to_submit if spec.workflow_id != workflow_id]
        self._to_cancel.append((workflow_id, ()))
        self._work.set()

    def cancel_tasks(self, workflow_id: str, task_ids: Sequence[str]) -> None:
        """Calls these tasks of the workflow off (copies no longer needed)."""
        named = set(task_ids)
        self._to_submit = [spec for spec in self._to_submit if spec.task_id not in named]
        self._to_cancel.append((workflow_id, tuple(task_ids)))
        self._work.set()

    def report(self, verdicts: Sequence[Verdict]) -> None:
        """Verdicts on volunteers' results, for the coordinator's trust records."""
        if verdicts:
            self._to_report.extend(verdicts)
            self._work.set()

    async def run(self, manager_address: str) -> None:
        """Stays connected until cancelled."""
        self._manager_address = manager_address
        backoff = Backoff()
        while True:
            address = await self._finder.next_address()
            channel = open_channel(address, self._credential.current, role_name("coordinator"))
            self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
            self._trust = trust_pb2_grpc.TrustServiceStub(channel)
            try:
                await run_together(self._follow_events(address, backoff), self._send_forever())
            except grpc.aio.AioRpcError as error:
                log.warning("coordinator %s: %s", address, error.details() or error.code().name)
                self._finder.failed(address)
            finally:
                self._stub = self._trust = None
                await channel.close()
            await asyncio.sleep(backoff.next_delay())

    async def _follow_events(self, address: str, backoff: Backoff) -> None:
        assert self._stub is not None
        request = coordinator_pb2.WatchTasksRequest(
            manager_id=self._manager_id,
            after_sequence=await self._after_sequence(),
            knows_fetching=True,
        )
        first = True
        async for message in self._stub.WatchTasks(request):
            if first:
                log.info("following task events from coordinator %s", address)
                self._finder.worked(address)
                backoff.reset()
                first = False
            try:
                event = convert.task_event_from_proto(message)
            except ValueError:  # a newer coordinator's: nothing here would know what it means
                log.warning("ignoring a task event of unknown kind %r", message.kind[:40])
                continue
            await self._on_event(event)

    async def _send_forever(self) -> None:
        """Delivers queued submissions and cancels; keeps them queued while calls fail."""
        backoff = Backoff()
        if self._to_submit or self._to_cancel or self._to_report:
            self._work.set()
        while True:
            await self._work.wait()
            self._work.clear()
            try:
                await self._send_queued()
                backoff.reset()
            except grpc.aio.AioRpcError as error:
                delay = backoff.next_delay()
                log.warning(
                    "handing tasks to the coordinator failed (%s); retrying in %.1f s",
                    error.details() or error.code().name,
                    delay,
                )
                await asyncio.sleep(delay)
                self._work.set()

    async def _send_queued(self) -> None:
        """Cancels first, and again between batches: a cancel reaches the coordinator within
        one batch's call, however many tasks wait to be sent."""
        assert self._stub is not None
        await self._send_cancels()
        while self._to_submit:
            # Taken off the queue before the call: a cancel meanwhile filters what is left.
            batch = self._to_submit[:SUBMIT_BATCH]
            del self._to_submit[:SUBMIT_BATCH]
            try:
                await self._stub.SubmitTasks(
                    coordinator_pb2.SubmitTasksRequest(
                        manager_id=self._manager_id,
                        manager_address=self._manager_address,
                        tasks=[convert.task_spec_to_proto(spec) for spec in batch],
                    ),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            except BaseException:
                # Not delivered: back at the front, less what was cancelled meanwhile.
                whole = {workflow for workflow, named in self._to_cancel if not named}
                named = {t for _, task_ids in self._to_cancel for t in task_ids}
                self._to_submit[:0] = [
                    s for s in batch if s.workflow_id not in whole and s.task_id not in named
                ]
                raise
            await self._send_cancels()
        await self._send_verdicts()

    async def _send_verdicts(self) -> None:
        assert self._stub is not None
        while self._to_report:
            batch = self._to_report[:SUBMIT_BATCH]
            await self._stub.ReportVerdicts(
                coordinator_pb2.ReportVerdictsRequest(
                    manager_id=self._manager_id,
                    verdicts=[convert.verdict_to_proto(v) for v in batch],
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            del self._to_report[: len(batch)]

    async def _send_cancels(self) -> None:
        assert self._stub is not None
        while self._to_cancel:
            workflow_id, task_ids = self._to_cancel[0]
            await self._stub.CancelTasks(
                coordinator_pb2.CancelTasksRequest(
                    manager_id=self._manager_id,
                    # The tasks named, or the whole workflow.
                    workflow_id="" if task_ids else workflow_id,
                    task_ids=task_ids,
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            del self._to_cancel[0]
