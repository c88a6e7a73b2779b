"""How client commands talk to a daemon: a channel whose failed calls become errors that
say what to do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from daemon.transport.channels import Dial, open_channel
from daemon.transport.errors import error_from_rpc


@asynccontextmanager
async def connected(peer: Dial, what: str) -> AsyncIterator[grpc.aio.Channel]:
    """`what` names the kind of node expected there ("coordinator", "manager", "node")."""
    channel = open_channel(peer.address, peer.credential, peer.peer)
    try:
        yield channel
    except grpc.aio.AioRpcError as error:
        raise error_from_rpc(error, peer.address, what) from None
    finally:
        await channel.close()
