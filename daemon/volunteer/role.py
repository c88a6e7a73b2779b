"""The volunteer role: reports this machine to a coordinator and keeps that session alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from daemon.errors import NodeError, RejectedError
from daemon.models import Load, Registration
from daemon.resources import measure_load, measure_resources, probe_docker
from daemon.roles import RoleContext
from daemon.volunteer.link import CoordinatorLink
from daemon.volunteer.store import VolunteerStore

log = logging.getLogger(__name__)


class VolunteerRole:
    name = "volunteer"

    def __init__(self, context: RoleContext) -> None:
        self._context = context
        self._store = VolunteerStore(context.data_dir)
        self._running_tasks = 0
        self.link: CoordinatorLink | None = None
        self._task: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        """The volunteer serves nothing of its own yet: it only dials out."""

    async def open(self) -> None:
        await self._store.open()

    async def start(self, address: str) -> None:
        config = self._context.config
        coordinator = config.coordinator
        if coordinator is None and "coordinator" in self._context.identity.roles:
            coordinator = address  # our own coordinator: mDNS rightly hides us from ourselves
        self.link = CoordinatorLink(
            explicit_address=coordinator,
            directory=self._context.directory,
            registration=self._registration,
            load=self._load,
            heartbeat_seconds=config.heartbeat_seconds,
        )
        self._task = asyncio.get_running_loop().create_task(self.link.run())
        self._task.add_done_callback(self._on_link_done)

    def _on_link_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, RejectedError):
            self._context.on_fatal(
                RejectedError(f"coordinator {self._context.config.coordinator} refused us: {error}")
            )
        elif error is not None:
            log.error("coordinator link failed", exc_info=error)
            self._context.on_fatal(NodeError(f"coordinator link failed: {error!r}"))

    async def _registration(self) -> Registration:
        docker_available, images = await probe_docker()
        identity = self._context.identity
        return Registration(
            volunteer_id=identity.node_id,
            hostname=identity.hostname,
            cluster=identity.cluster,
            protocol_version=identity.protocol_version,
            version=identity.version,
            resources=measure_resources(self._context.data_dir, docker_available, images),
            limits=self._context.config.limits,
            running_task_ids=await self._store.running_task_ids(),
        )

    def _load(self) -> Load:
        return measure_load(self._running_tasks)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def close(self) -> None:
        await self._store.close()
