"""Strangers who send too much are refused at the edge of a real coordinator, and the pool
stays usable: a volunteer claiming a 9 MiB host name used to be registered, after which
`node volunteers` failed for good (`Sent message larger than max`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from daemon.app import Node
from daemon.config import PROTOCOL_VERSION, NodeConfig
from daemon.models import OwnerLimits, Registration, ResourceRequest, Resources, TaskSpec
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.transport import convert
from daemon.transport.channels import open_channel
from daemon.version import VERSION
from tests.integration.harness import serving
from tests.trust import credential

pytestmark = pytest.mark.integration

CLUSTER = "caps"


def node(data_dir: Path) -> Node:
    return Node(NodeConfig(("coordinator",), data_dir, "127.0.0.1:0", cluster=CLUSTER, mdns=False))


async def one(
    message: coordinator_pb2.VolunteerMessage,
) -> AsyncIterator[coordinator_pb2.VolunteerMessage]:
    yield message


async def test_a_volunteer_with_a_huge_host_name_is_refused_and_the_pool_still_lists(
    tmp_path: Path,
) -> None:
    registration = Registration(
        volunteer_id="v-huge",
        hostname="h" * 9 * 2**20,
        cluster=CLUSTER,
        protocol_version=PROTOCOL_VERSION,
        version=VERSION,
        resources=Resources(4, 8192, 100_000),
        limits=OwnerLimits(),
    )
    register = coordinator_pb2.VolunteerMessage(
        register=convert.registration_to_proto(registration)
    )
    async with (
        serving(node(tmp_path / "node")) as address,
        open_channel(address, credential(["volunteer"])) as channel,
    ):
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        call = stub.VolunteerSession(one(register))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == (
            "refused: Register.hostname holds 9,437,184 characters; at most 255"
        )
        listed = await stub.ListVolunteers(coordinator_pb2.ListVolunteersRequest(), timeout=5)
        assert list(listed.volunteers) == []


async def test_a_submission_of_too_many_tasks_at_once_is_refused(tmp_path: Path) -> None:
    tasks = [
        convert.task_spec_to_proto(
            TaskSpec(f"wf.t{i}", "wf", "vcnode/worker:1", ("true",), ResourceRequest(), 60)
        )
        for i in range(1_001)
    ]
    async with (
        serving(node(tmp_path / "node")) as address,
        open_channel(address, credential(["manager"], node_id="m")) as channel,
    ):
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitTasks(
                coordinator_pb2.SubmitTasksRequest(manager_id="m", tasks=tasks), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "SubmitTasksRequest.tasks holds 1,001 entries; at most 1,000" in str(
            refused.value.details()
        )


async def test_a_submission_with_a_manager_address_nobody_can_dial_is_refused(
    tmp_path: Path,
) -> None:
    task = convert.task_spec_to_proto(
        TaskSpec("wf.t", "wf", "vcnode/worker:1", ("true",), ResourceRequest(), 60)
    )
    async with (
        serving(node(tmp_path / "node")) as address,
        open_channel(address, credential(["manager"], node_id="m")) as channel,
    ):
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        for bad in ("", "x", "host:0"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SubmitTasks(
                    coordinator_pb2.SubmitTasksRequest(
                        manager_id="m", manager_address=bad, tasks=[task]
                    ),
                    timeout=10,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "manager_address must be HOST:PORT" in str(refused.value.details())
