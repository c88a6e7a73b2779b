"""Background work never ends in silence: a crash in the coordinator's pool maintenance, the
manager's coordinator client, mDNS refresh or a volunteer's heartbeats stops the node saying
why; a crash handling one volunteer's message ends that session (and the pool hears it
ended); a splitter whose own code raises fails its workflow, not the manager. Real nodes in
this process: gRPC on loopback, real SQLite files."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from coordinator_node.pool import Pool
from coordinator_node.scheduler import Scheduler
from daemon.app import Node
from daemon.config import PROTOCOL_VERSION, NodeConfig
from daemon.discovery import mdns
from daemon.discovery.peers import Peer, PeerTable
from daemon.errors import NodeError
from daemon.models import (
    Load,
    NodeIdentity,
    OwnerLimits,
    Registration,
    ResourceRequest,
    Resources,
    TaskSpec,
)
from daemon.roles import RoleContext
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.transport import convert
from daemon.transport.access import AccessPolicy
from daemon.transport.channels import open_channel
from daemon.trust.bootstrap import NodeTrust
from daemon.version import VERSION
from manager_node import manager as manager_module
from manager_node.coordinator_client import CoordinatorClient
from manager_node.manager import WorkflowManager
from manager_node.role import ManagerRole
from manager_node.store import ManagerStore, NewTask
from manager_node.workflow import TaskStatus, WorkflowTask
from splitters.api import Estimate, TaskTemplate, same_bytes
from tests.integration.harness import serving
from tests.trust import admin_credential, credential, provision
from volunteer_node import role as volunteer_role

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 15.0


def node_config(data_dir: Path, *roles: str, heartbeat: float = 0.2) -> NodeConfig:
    return NodeConfig(
        roles=roles,
        data_dir=data_dir,
        listen="127.0.0.1:0",
        cluster="supervision",
        mdns=False,
        heartbeat_seconds=heartbeat,
    )


def crash_records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if name in r.getMessage() and r.exc_info is not None]


async def test_a_crash_in_pool_maintenance_stops_the_node_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_tick(self: Scheduler, now: float) -> list[Any]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Scheduler, "tick", broken_tick)
    node = Node(node_config(tmp_path / "node", "coordinator"))
    with pytest.raises(NodeError, match=r"pool maintenance crashed: OperationalError"):
        await asyncio.wait_for(node.run(), DEADLINE_SECONDS)
    assert crash_records(caplog, "pool maintenance"), "the traceback was not logged"


async def test_a_crash_in_the_managers_event_following_stops_the_node_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_last_sequence(self: WorkflowManager) -> int:
        raise RuntimeError("events table unreadable")

    monkeypatch.setattr(WorkflowManager, "last_sequence", broken_last_sequence)
    node = Node(node_config(tmp_path / "node", "coordinator", "manager"))
    with pytest.raises(NodeError, match="coordinator client crashed: RuntimeError"):
        await asyncio.wait_for(node.run(), DEADLINE_SECONDS)
    assert crash_records(caplog, "coordinator client"), "the traceback was not logged"


async def test_a_crash_in_the_managers_task_sender_stops_the_node_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_sender(self: CoordinatorClient) -> None:
        raise RuntimeError("submission queue corrupt")

    monkeypatch.setattr(CoordinatorClient, "_send_forever", broken_sender)
    node = Node(node_config(tmp_path / "node", "coordinator", "manager"))
    with pytest.raises(NodeError, match="coordinator client crashed: RuntimeError"):
        await asyncio.wait_for(node.run(), DEADLINE_SECONDS)
    assert crash_records(caplog, "coordinator client"), "the traceback was not logged"


async def test_a_crash_in_mdns_refresh_stops_the_node_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_expire(self: PeerTable, now: float) -> list[Peer]:
        raise RuntimeError("peer table corrupt")

    monkeypatch.setattr(mdns, "REFRESH_SECONDS", 0.05)
    monkeypatch.setattr(PeerTable, "expire", broken_expire)
    config = replace(
        node_config(tmp_path / "node", "coordinator"), mdns=True, mdns_interfaces=("127.0.0.1",)
    )
    with pytest.raises(NodeError, match="mDNS refresh crashed: RuntimeError"):
        await asyncio.wait_for(Node(config).run(), DEADLINE_SECONDS)
    assert crash_records(caplog, "mDNS refresh"), "the traceback was not logged"


async def test_a_crash_in_a_volunteers_heartbeats_stops_the_node_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_load(running_tasks: int, unavailable: tuple[str, float] = ("", 0.0)) -> Load:
        raise RuntimeError("no /proc/stat")

    monkeypatch.setattr(volunteer_role, "measure_load", broken_load)
    async with serving(Node(node_config(tmp_path / "coordinator", "coordinator"))) as address:
        volunteer = Node(
            replace(
                node_config(tmp_path / "volunteer", "volunteer"),
                coordinator=address,
                limits=OwnerLimits(allow_process_runtime=True),
            )
        )
        provision(volunteer.config.data_dir, volunteer.config.roles)
        with pytest.raises(NodeError, match="coordinator link failed: RuntimeError"):
            await asyncio.wait_for(volunteer.run(), DEADLINE_SECONDS)
    assert crash_records(caplog, "coordinator link"), "the traceback was not logged"


async def _registered_session(
    address: str,
) -> tuple[grpc.aio.Channel, Any, asyncio.Queue[coordinator_pb2.VolunteerMessage | None]]:
    registration = Registration(
        volunteer_id="v-crash",
        hostname="crash-host",
        cluster="supervision",
        protocol_version=PROTOCOL_VERSION,
        version=VERSION,
        resources=Resources(cpu_cores=2, memory_mb=2048, disk_free_mb=10_000),
        limits=OwnerLimits(),
    )
    outgoing: asyncio.Queue[coordinator_pb2.VolunteerMessage | None] = asyncio.Queue()
    outgoing.put_nowait(
        coordinator_pb2.VolunteerMessage(register=convert.registration_to_proto(registration))
    )

    async def messages() -> AsyncIterator[coordinator_pb2.VolunteerMessage]:
        while (message := await outgoing.get()) is not None:
            yield message

    channel = open_channel(address, credential(["volunteer"], node_id=registration.volunteer_id))
    call = coordinator_pb2_grpc.CoordinatorServiceStub(channel).VolunteerSession(messages())
    first = await call.read()
    assert isinstance(first, coordinator_pb2.CoordinatorMessage)
    assert first.WhichOneof("kind") == "welcome"
    return channel, call, outgoing


async def _volunteer(address: str, volunteer_id: str) -> coordinator_pb2.VolunteerInfo:
    async with open_channel(address, admin_credential()) as channel:
        reply = await coordinator_pb2_grpc.CoordinatorServiceStub(channel).ListVolunteers(
            coordinator_pb2.ListVolunteersRequest(), timeout=5
        )
    [info] = [v for v in reply.volunteers if v.volunteer_id == volunteer_id]
    assert isinstance(info, coordinator_pb2.VolunteerInfo)
    return info


async def test_a_crash_handling_a_volunteers_message_ends_its_session_and_the_pool_hears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_heartbeat(self: Pool, session: object, load: object) -> None:
        raise RuntimeError("heartbeat handling broke")

    monkeypatch.setattr(Pool, "heartbeat", broken_heartbeat)
    # A long heartbeat: expiry cannot be what disconnects the volunteer within the test.
    async with serving(
        Node(node_config(tmp_path / "node", "coordinator", heartbeat=60))
    ) as address:
        channel, call, outgoing = await _registered_session(address)
        assert (await _volunteer(address, "v-crash")).connected
        outgoing.put_nowait(coordinator_pb2.VolunteerMessage(heartbeat=coordinator_pb2.Heartbeat()))
        # The coordinator ends the session itself ...
        assert await asyncio.wait_for(call.read(), DEADLINE_SECONDS) is grpc.aio.EOF
        # ... and the pool knows the volunteer is gone (it used to skip `leave`).
        assert not (await _volunteer(address, "v-crash")).connected
        assert crash_records(caplog, "handling its message failed")
        outgoing.put_nowait(None)
        await channel.close()


class MergeRaises:
    """A third-party splitter with a bug in its merge."""

    name = "merge_raises"
    description = "merges badly"
    parameters = ()
    example: Mapping[str, Any] = {}

    def __init__(self) -> None:
        self.merges = 0

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        return []

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        self.merges += 1
        raise ValueError("operands could not be broadcast together")

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        return Estimate(task_count=1, resources=ResourceRequest(), seconds_per_task=1.0)

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        return same_bytes(a, b)


async def _merging_workflow(data_dir: Path) -> None:
    """A workflow whose every task completed, left merging (as by a restart mid-merge)."""
    store = ManagerStore(data_dir)
    await store.open()
    spec = TaskSpec(
        task_id="wf.only",
        workflow_id="wf",
        image="vcnode/worker:1",
        command=("true",),
        resources=ResourceRequest(),
        timeout_seconds=60,
    )
    await store.create_workflow("wf", "wf", MergeRaises.name, {}, [NewTask(spec, "only", ())], [])
    await store.save_tasks([WorkflowTask("wf.only", "only", status=TaskStatus.COMPLETED)])
    await store.set_workflow_state("wf", "merging")
    await store.close()


class MergeReturnsJunk(MergeRaises):
    """A third-party splitter whose merge returns what no manager can store."""

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        self.merges += 1
        return [42]  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("splitter", "said", "logged"),
    [
        (
            MergeRaises(),
            "merge_raises merge: the splitter failed: ValueError: operands could not be broadcast",
            "merge_raises: merge raised",
        ),
        (MergeReturnsJunk(), "merge failed: ", "merge failed"),
    ],
    ids=["raises", "returns-junk"],
)
async def test_a_splitter_whose_merge_breaks_fails_its_workflow_and_not_the_manager(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    splitter: MergeRaises,
    said: str,
    logged: str,
) -> None:
    monkeypatch.setattr(manager_module, "get_splitter", lambda name: splitter)
    await _merging_workflow(tmp_path)
    fatal: list[NodeError] = []
    context = RoleContext(
        config=node_config(tmp_path, "manager"),
        identity=NodeIdentity(
            node_id="m-1",
            hostname=socket.gethostname(),
            roles=("manager",),
            cluster="supervision",
            version=VERSION,
            protocol_version=PROTOCOL_VERSION,
        ),
        data_dir=tmp_path,
        directory=None,
        on_fatal=fatal.append,
        trust=NodeTrust(credential(["manager"], node_id="m-1"), None),
        policy=AccessPolicy("m-1"),
    )

    for restart in range(2):
        role = ManagerRole(context)
        await role.open()  # resumes the merge
        reader = ManagerStore(tmp_path)
        await reader.open()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (workflow := (await reader.workflows("wf"))[0]).state == "merging":
            assert time.monotonic() < deadline, "the workflow stayed merging"
            await asyncio.sleep(0.02)
        await reader.close()
        await role.stop()
        await role.close()
        assert workflow.state == "failed"
        assert said in workflow.error
        assert splitter.merges == 1, f"restart {restart}: a failed merge ran again"
    assert not fatal, "a splitter's bug must not stop the manager"
    assert crash_records(caplog, logged)
