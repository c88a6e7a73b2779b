"""The owner's control of a running volunteer (`vcnode pause`, `resume`, `drain`), served on
the data dir's control socket (daemon/transport/local_socket.py). Converts, calls the
worker, and says what the volunteer now does."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from daemon.errors import ConfigError
from daemon.reload import Reloaded
from daemon.rpc.v1 import control_pb2, control_pb2_grpc
from daemon.transport import convert
from volunteer_node.blobs import CacheCleared
from volunteer_node.lifecycle import LifecycleView

# The longest pause one call may ask for: a year is "until resumed" in all but name.
MAX_PAUSE_SECONDS = 366 * 24 * 3600.0


class Controlled(Protocol):
    """The volunteer's worker, as far as its owner's control goes."""

    async def pause(self, seconds: float | None = None) -> None: ...

    async def resume(self) -> None: ...

    async def drain(self) -> None: ...

    def view(self) -> LifecycleView: ...


Context = grpc.aio.ServicerContext[Any, control_pb2.VolunteerWork]


class OwnerControlServicer(control_pb2_grpc.OwnerControlServicer):
    def __init__(
        self,
        worker: Controlled,
        coordinator: Callable[[], str],
        node_id: str,
        reload: Callable[[], Awaitable[Reloaded]] | None = None,
        clear_cache: Callable[[], Awaitable[CacheCleared]] | None = None,
    ) -> None:
        """`coordinator`: the address of the coordinator in session ("" when none);
        `reload`: reads the daemon's configuration again (daemon/app.py Node.reload)."""
        self._node_id = node_id
        self._worker = worker
        self._coordinator = coordinator
        self._reload = reload
        self._clear_cache = clear_cache

    async def Pause(
        self, request: control_pb2.PauseRequest, context: Context
    ) -> control_pb2.VolunteerWork:
        seconds = request.seconds
        if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_PAUSE_SECONDS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a pause lasts from 1 s to {MAX_PAUSE_SECONDS / 86400:g} days "
                "(or, with no --for, until resumed)",
            )
        await self._worker.pause(seconds or None)
        return self._work()

    async def Resume(
        self, request: control_pb2.ResumeRequest, context: Context
    ) -> control_pb2.VolunteerWork:
        await self._worker.resume()
        return self._work()

    async def Drain(
        self, request: control_pb2.DrainRequest, context: Context
    ) -> control_pb2.VolunteerWork:
        await self._worker.drain()
        return self._work()

    async def GetWork(
        self, request: control_pb2.GetWorkRequest, context: Context
    ) -> control_pb2.VolunteerWork:
        return self._work()

    async def ReloadConfig(
        self,
        request: control_pb2.ReloadConfigRequest,
        context: grpc.aio.ServicerContext[Any, control_pb2.ReloadConfigReply],
    ) -> control_pb2.ReloadConfigReply:
        if self._reload is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "this daemon has no configuration to re-read"
            )
        assert self._reload is not None
        try:
            # Whole even if the owner gives up waiting (Ctrl-C): half a reload is worse.
            reloaded = await asyncio.shield(self._reload())
        except ConfigError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return control_pb2.ReloadConfigReply(
            applied=reloaded.applied,
            needs_restart=reloaded.needs_restart,
            summary=reloaded.describe(),
        )

    async def ClearCache(
        self,
        request: control_pb2.ClearCacheRequest,
        context: grpc.aio.ServicerContext[Any, control_pb2.ClearCacheReply],
    ) -> control_pb2.ClearCacheReply:
        if self._clear_cache is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this volunteer has no cache")
        assert self._clear_cache is not None
        cleared = await asyncio.shield(self._clear_cache())
        return control_pb2.ClearCacheReply(
            blobs=cleared.blobs,
            freed_bytes=cleared.freed_bytes,
            left_bytes=cleared.left.used_bytes,
            quota_bytes=cleared.left.quota_bytes,
        )

    def _work(self) -> control_pb2.VolunteerWork:
        work = work_to_proto(self._worker.view(), self._coordinator())
        work.node_id = self._node_id
        return work


def work_to_proto(view: LifecycleView, coordinator: str) -> control_pb2.VolunteerWork:
    return control_pb2.VolunteerWork(
        holds=[
            control_pb2.WorkHold(
                name=hold.name,
                reason=hold.reason,
                until=hold.until if math.isfinite(hold.until) else 0.0,
                since=hold.since,
            )
            for hold in view.holds
        ],
        draining=view.draining,
        stopping=view.stopping,
        attempts=[
            control_pb2.HeldAttempt(
                task_id=a.task_id, attempt=a.attempt, workflow_id=a.workflow_id, phase=a.phase
            )
            for a in view.attempts
        ],
        unacknowledged=view.unacknowledged,
        slots=view.slots,
        held_most=view.held_most,
        coordinator=coordinator,
        hold_grace_seconds=view.hold_grace_seconds,
        limits=convert.limits_to_proto(view.limits),
    )
