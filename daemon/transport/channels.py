"""Builds every gRPC server and channel of the node with the same options.

Every channel is mutual TLS with the cluster's certificates, and names the peer it expects
(a role, or one node's id: see daemon/trust/pki.py), so a peer that is not what the caller
thinks fails the handshake. The one plaintext listener is the coordinator's join port, where
the access policy admits only join requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from daemon.transport.access import AccessPolicy
from daemon.transport.edge import Edge
from daemon.trust.credentials import Credential, LiveCredential
from daemon.trust.pki import ANY_NODE

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
_SERVER_OPTIONS = [
    *_OPTIONS,
    # Without this a second daemon could silently share our port.
    ("grpc.so_reuseport", 0),
    # Let volunteer keepalive pings through so dead streams are noticed.
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
_CHANNEL_OPTIONS = [
    *_OPTIONS,
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnects are ours to pace (jittered backoff), not the channel's.
    ("grpc.enable_retries", 0),
]


@dataclass(frozen=True)
class Dial:
    """Where to dial, as whom, and whom to expect there."""

    address: str
    credential: Credential
    peer: str = ANY_NODE


def create_server(policy: AccessPolicy) -> grpc.aio.Server:
    return grpc.aio.server(options=_SERVER_OPTIONS, interceptors=[Edge(policy)])


def bind(
    server: grpc.aio.Server, address: str, credential: Credential | LiveCredential | None
) -> int:
    """Binds `address` (port 0 picks a free port) and returns the bound port, or 0 on failure.
    Without a credential the port is plaintext: for the join port only."""
    try:
        if credential is None:
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, credential.server_credentials()))
    except RuntimeError:
        return 0


def _peer_options(peer: str) -> list[tuple[str, object]]:
    return [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", peer)]


def open_channel(address: str, credential: Credential, peer: str = ANY_NODE) -> grpc.aio.Channel:
    """A channel to `address` that only a member of the cluster named `peer` answers."""
    return grpc.aio.secure_channel(
        address, credential.channel_credentials(), options=_peer_options(peer)
    )


def open_sync_channel(address: str, credential: Credential, peer: str = ANY_NODE) -> grpc.Channel:
    """A blocking channel with the same options as `open_channel`, for loops that run on a
    worker thread (the bulk transfer ends: see daemon/transfer/client.py). Never use it on
    the event loop."""
    return grpc.secure_channel(
        address, credential.channel_credentials(), options=_peer_options(peer)
    )


def open_join_channel(address: str) -> grpc.aio.Channel:
    """A plaintext channel to a coordinator's join port: nothing sent on it is secret, and
    what comes back is checked against the CA hash a join token pins."""
    return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
