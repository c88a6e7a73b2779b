"""The owner's control socket (daemon/transport/local_socket.py): a real gRPC server on a
Unix socket, owner-only, in the data dir or, for a data dir too deep for a socket's path,
behind a link to a private directory; clients dial it and reach nothing else there."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest

from daemon.rpc.v1 import control_pb2, control_pb2_grpc, node_pb2, node_pb2_grpc
from daemon.transport.local_socket import (
    ControlServer,
    ControlSocketError,
    open_control_channel,
    socket_path,
)

pytestmark = pytest.mark.integration


class Answering(control_pb2_grpc.OwnerControlServicer):
    async def GetWork(self, request: Any, context: Any) -> control_pb2.VolunteerWork:
        return control_pb2.VolunteerWork(node_id="the-volunteer")

    Pause = Resume = Drain = GetWork

    async def ReloadConfig(self, request: Any, context: Any) -> control_pb2.ReloadConfigReply:
        return control_pb2.ReloadConfigReply()

    async def ClearCache(self, request: Any, context: Any) -> control_pb2.ClearCacheReply:
        return control_pb2.ClearCacheReply()


def data_dir(root: Path, depth: int) -> Path:
    path = root.joinpath(*(["d" * 20] * depth))
    path.mkdir(parents=True, mode=0o700)
    path.chmod(0o700)
    return path


async def work_of(path: Path) -> str:
    async with open_control_channel(path) as channel:
        stub = control_pb2_grpc.OwnerControlStub(channel)
        reply = await stub.GetWork(control_pb2.GetWorkRequest(), timeout=5)
    return str(reply.node_id)


async def serving(path: Path) -> ControlServer:
    server = ControlServer(
        path, "node", lambda s: control_pb2_grpc.add_OwnerControlServicer_to_server(Answering(), s)
    )
    await server.start()
    return server


async def test_the_socket_is_owner_only_in_the_data_dir_and_goes_with_the_server(
    tmp_path: Path,
) -> None:
    path = data_dir(tmp_path, 1)
    stale = socket_path(path)
    stale.write_text("left by a daemon that was killed")
    server = await serving(path)
    try:
        assert stat.S_ISSOCK(os.lstat(stale).st_mode)
        assert stat.S_IMODE(os.lstat(stale).st_mode) == 0o600
        assert await work_of(path) == "the-volunteer"
        # Nothing but the owner's control is served there.
        async with open_control_channel(path) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await node_pb2_grpc.NodeServiceStub(channel).GetInfo(
                    node_pb2.GetInfoRequest(), timeout=5
                )
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop()
    assert not (stale.exists())
    assert not (stale.is_symlink())
    with pytest.raises(ControlSocketError, match="no volunteer is running with data dir"):
        open_control_channel(path)


async def test_a_data_dir_too_deep_for_a_socket_path_links_to_a_private_one(
    tmp_path: Path,
) -> None:
    path = data_dir(tmp_path, 6)
    assert len(str(socket_path(path))) > 107
    server = await serving(path)
    try:
        link = socket_path(path)
        assert link.is_symlink()
        target = Path(os.readlink(link))
        assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(target).st_mode) == 0o600
        assert await work_of(path) == "the-volunteer"
        # A socket there that another user made (after a crash left the link) is not ours.
        os.chown(target, 65534, 65534)
        with pytest.raises(ControlSocketError, match="another user owns it"):
            open_control_channel(path)
        os.chown(target, os.getuid(), os.getgid())
    finally:
        await server.stop()
    assert not socket_path(path).is_symlink()
    assert not target.parent.exists()
