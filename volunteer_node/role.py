"""The volunteer role: reports this machine to a coordinator and runs the tasks it accepts."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from daemon.config import NodeConfig
from daemon.errors import ConfigError, NodeError, RejectedError
from daemon.models import Load, Registration
from daemon.resources import measure_load, measure_resources, probe_docker
from daemon.roles import RoleContext
from daemon.rpc.v1 import control_pb2_grpc
from daemon.runtime.image_archive import ImageArchiveError
from daemon.runtime.on_demand import DockerOnDemand
from daemon.runtime.probe import ProbeError
from daemon.runtime.process import ProcessRuntime
from daemon.runtime.process import unavailable as sandbox_unavailable
from daemon.runtime.spec import Runtime
from daemon.supervision import Supervisor
from daemon.transport.local_socket import ControlServer
from volunteer_node.blobs import BlobTransfers
from volunteer_node.control import OwnerControlServicer
from volunteer_node.image_ids import ImageIds
from volunteer_node.link import CoordinatorLink
from volunteer_node.rule_watch import CpuMeter, Probes, RuleWatch, docker_task_containers
from volunteer_node.store import VolunteerStore
from volunteer_node.worker import TaskWorker, WorkerConfig

if TYPE_CHECKING:
    from daemon.web.site import WebSite

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# The cache of fetched inputs when the owner set no disk cap.
DEFAULT_CACHE_MB = 20 * 1024
# How long a stopping volunteer waits for its coordinator to hear its goodbye.
GOODBYE_TIMEOUT_SECONDS = 5.0


class VolunteerRole:
    name = "volunteer"

    def __init__(self, context: RoleContext) -> None:
        self._context = context
        self._store = VolunteerStore(context.data_dir)
        # The cache's size is the cap on disk the pool matches tasks' inputs against.
        configured = context.config.limits
        self._limits = replace(configured, max_disk_mb=configured.max_disk_mb or DEFAULT_CACHE_MB)
        cache_bytes = self._limits.max_disk_mb * MIB
        self._transfers = BlobTransfers(context.data_dir / "blobs", cache_bytes, context.trust.live)
        self._docker: DockerOnDemand | None = None
        self._docker_available = False
        self._images: tuple[str, ...] = ()
        self._image_ids = ImageIds(self._image_id)
        self.worker: TaskWorker | None = None
        self.link: CoordinatorLink | None = None
        # The owner's rules (hours, idle, load, battery); a config reload calls
        # `rules.reconfigure(new_config.schedule)`.
        self.rules: RuleWatch | None = None
        self._supervisor = Supervisor(context.on_fatal)
        self._link_task: asyncio.Task[None] | None = None
        self._control: ControlServer | None = None

    def register(self, server: grpc.aio.Server) -> None:
        """The volunteer serves nothing of its own: it only dials out."""

    def web(self, site: WebSite) -> None:
        """A volunteer adds nothing to a dashboard yet: its owner has `vcnode status`."""

    async def open(self) -> None:
        await self._store.open()
        await self._transfers.open()
        self._docker_available, self._images = await probe_docker()
        limits = self._limits
        runtime: Runtime | None = None
        if self._docker_available:
            # aiodocker (~14 MiB) is imported by the first task that needs it, not while idle.
            node_id = self._context.identity.node_id
            self._docker = runtime = DockerOnDemand(owner=node_id)
            try:
                removed = await self._docker.remove_leftovers()
            except ProbeError as error:  # they keep running; tasks can still run beside them
                log.warning(
                    "could not remove the containers a previous run of this volunteer left "
                    "(`docker ps -a --filter label=vcnode.volunteer=%s` lists them): %s",
                    node_id,
                    error,
                )
                removed = 0
            if removed:
                log.warning(
                    "removed %d containers left by a previous run of this volunteer", removed
                )
        elif limits.allow_process_runtime:
            if (problem := sandbox_unavailable()) is not None:
                raise ConfigError(f"no Docker engine, and {problem}")
            runtime = ProcessRuntime()
            log.warning(
                "no Docker engine: tasks will run as processes in a bubblewrap sandbox, as "
                "the owner allowed (--allow-process-runtime); limits are rlimits, not cgroups"
                + ("; --cpu-throttle-percent does not apply" if limits.cpu_throttle_percent else "")
            )
        else:
            log.warning(
                "no Docker engine and the process runtime is not allowed: this volunteer "
                "will decline every task"
            )
        self.worker = TaskWorker(
            WorkerConfig(
                tasks_dir=self._context.data_dir / "tasks",
                limits=limits,
                hold_grace_seconds=self._context.config.pause_grace_seconds,
            ),
            self._store,
            self._transfers,
            runtime,
            resources=lambda: measure_resources(
                self._context.data_dir, self._docker_available, self._images
            ),
            image_id=self._image_ids.get,
            load_image=self._load_image if self._docker else None,
            pull_image=self._pull_image if self._docker else None,
            push_log=self._transfers.push_log,
        )
        await self.worker.open()

    async def _image_id(self, image: str) -> str | None:
        return await self._docker.image_id(image) if self._docker else None

    async def _pull_image(self, image: str) -> None:
        from daemon.runtime.docker import PullError  # with aiodocker, which pulls it

        assert self._docker is not None
        try:
            await self._docker.pull_image(image)
        except PullError as error:
            raise NodeError(str(error)) from None
        finally:
            self._image_ids.forget()

    async def _load_image(self, archive: Path, image_id: str) -> None:
        assert self._docker is not None
        try:
            await self._docker.load_image(archive, image_id, self._context.data_dir / "images")
        except ImageArchiveError as error:
            raise NodeError(f"the manager's image archive was refused: {error}") from None
        finally:
            self._image_ids.forget()

    async def start(self, address: str, advertised: str) -> None:
        assert self.worker is not None
        config = self._context.config
        coordinator = config.coordinator
        if coordinator is None and "coordinator" in self._context.identity.roles:
            coordinator = address  # our own coordinator: mDNS rightly hides us from ourselves
        self.link = CoordinatorLink(
            explicit_address=coordinator,
            directory=self._context.directory,
            credential=self._context.trust.live,
            registration=self._registration,
            load=self._load,
            handler=self.worker,
            heartbeat_seconds=config.heartbeat_seconds,
            board=self._context.board,
            limits=lambda: self._limits,
        )
        self.worker.attach(self.link)
        # Before the link runs: a volunteer outside its hours must not take the first offer.
        containers = docker_task_containers(self._context.identity.node_id)
        self.rules = RuleWatch(
            self.worker,
            config.schedule,
            probes=Probes(other_load=CpuMeter(containers if self._docker else None)),
        )
        await self.rules.start()
        self._link_task = self._supervisor.spawn(
            self.link.run(), "coordinator link", on_crash=self._on_link_crash
        )
        await self._serve_owner_control()

    async def _serve_owner_control(self) -> None:
        """`vcnode pause`, `resume` and `drain` reach us on the data dir's control socket."""
        worker, link = self.worker, self.link
        assert worker is not None
        assert link is not None
        servicer = OwnerControlServicer(
            worker,
            coordinator=lambda: link.connected_to or "",
            node_id=self._context.identity.node_id,
            reload=self._context.reload,
            clear_cache=self._transfers.clear,
        )
        self._control = ControlServer(
            self._context.data_dir,
            self._context.identity.node_id,
            lambda server: control_pb2_grpc.add_OwnerControlServicer_to_server(servicer, server),
        )
        await self._control.start()

    async def reconfigure(self, config: NodeConfig) -> None:
        """The owner's limits, pause grace and rules, read again (a config reload): they
        apply at once, and the coordinator hears of the limits at the next heartbeat, sent
        now."""
        configured = config.limits
        self._limits = replace(configured, max_disk_mb=configured.max_disk_mb or DEFAULT_CACHE_MB)
        self._transfers.set_quota(self._limits.max_disk_mb * MIB)
        if self.worker is not None:
            await self.worker.reconfigure(self._limits, config.pause_grace_seconds)
        if self.rules is not None:
            await self.rules.reconfigure(config.schedule)
        if self.link is not None:
            self.link.send_heartbeat()

    def _on_link_crash(self, error: BaseException) -> None:
        if isinstance(error, RejectedError):
            error = RejectedError(
                f"coordinator {self._context.config.coordinator} refused us: {error}"
            )
        elif not isinstance(error, NodeError):
            error = NodeError(f"coordinator link failed: {error!r}")
        self._context.on_fatal(error)

    async def _registration(self) -> Registration:
        assert self.worker is not None
        self._docker_available, self._images = await probe_docker()
        identity = self._context.identity
        return Registration(
            volunteer_id=identity.node_id,
            hostname=identity.hostname,
            cluster=identity.cluster,
            protocol_version=identity.protocol_version,
            version=identity.version,
            resources=measure_resources(
                self._context.data_dir, self._docker_available, self._images
            ),
            limits=self._limits,
            running_task_ids=self.worker.running_task_ids(),
        )

    def _load(self) -> Load:
        if self.worker is None:
            return measure_load(0)
        return measure_load(len(self.worker.running_task_ids()), self.worker.availability())

    async def stop(self) -> None:
        if self.rules is not None:
            await self.rules.stop()
        if self._control is not None:
            await self._control.stop()
        # Tasks first, then goodbye: the coordinator offers them elsewhere at once instead
        # of after missed heartbeats.
        if self.worker is not None:
            await self.worker.stop()
        if self.link is not None and self._link_task is not None and not self._link_task.done():
            try:
                await asyncio.wait_for(
                    self.link.leave("its owner stopped it"), GOODBYE_TIMEOUT_SECONDS
                )
            except TimeoutError:
                log.warning("the coordinator did not hear our goodbye; it will notice we left")
        await self._supervisor.stop()

    async def close(self) -> None:
        await self._transfers.close()
        if self._docker is not None:
            await self._docker.close()
        await self._store.close()
