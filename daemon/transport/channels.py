"""Builds every gRPC server and channel of the node with the same options."""

from __future__ import annotations

import grpc

from daemon.transport.caps import EdgeCaps

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


def create_server() -> grpc.aio.Server:
    return grpc.aio.server(options=_SERVER_OPTIONS, interceptors=[EdgeCaps()])


def bind(server: grpc.aio.Server, address: str) -> int:
    """Binds `address` (port 0 picks a free port) and returns the bound port, or 0 on failure."""
    try:
        return int(server.add_insecure_port(address))
    except RuntimeError:
        return 0


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)


def open_sync_channel(address: str) -> grpc.Channel:
    """A blocking channel with the same options as `open_channel`, for loops that run on a
    worker thread (the bulk transfer ends: see daemon/transfer/client.py). Never use it on
    the event loop."""
    return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
