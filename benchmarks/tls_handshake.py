"""tls_handshake_ms: what mutual TLS costs a new client's first call to a running daemon.

A coordinator daemon on loopback; this process presents the coordinator's local admin
credential, as the CLI on its host does, and calls NodeService.Health (the cheapest unary
call there is), two ways, sample after sample in the same run:

- first call: open a fresh mTLS channel (`transport.channels.open_channel`, expecting the
  coordinator role, as the CLI dials it) and make one call; the sample runs from opening the
  channel to the reply, so it holds the TCP connect, the TLS handshake (both certificates
  checked), HTTP/2 set-up and the call. The channel is closed after each sample, and each
  sample is checked to have opened a TCP connection of its own (gRPC may share connections
  between channels of one process; a sample that did would have measured no handshake).
- warm call: the same call over one channel opened (and used once) before the samples.

- tls_handshake_ms: the median first call, in ms (the issue's target: <= 50).
- tls_handshake_warm_call_ms: the median warm call, in ms (context; held to the same limit).
The ratio of the two medians is printed on stderr with the spread of each.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil

from benchmarks.daemons import admin_credential, start_daemon, stop, wait_for_address
from benchmarks.report import Figure

SAMPLES = 40
CALL_TIMEOUT = 10.0
TARGET_MS = 50.0


def _connections_to(address: str) -> set[int]:
    """Local ports of this process's established TCP connections to `address` (gRPC's
    sockets are dual-stack: an IPv4 peer shows as ::ffff:A.B.C.D)."""
    host, _, port = address.rpartition(":")
    hosts = {host, f"::ffff:{host}"}
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.ip in hosts and c.raddr.port == int(port)
        and c.status == psutil.CONN_ESTABLISHED
    }  # fmt: skip


async def _measure(address: str, data_dir: Path) -> tuple[list[float], list[float]]:
    """(first-call seconds, warm-call seconds), SAMPLES of each, interleaved."""
    from daemon.rpc.v1 import node_pb2, node_pb2_grpc
    from daemon.transport.channels import open_channel
    from daemon.trust.pki import role_name

    peer = role_name("coordinator")
    request = node_pb2.HealthRequest()

    async def health(channel: grpc.aio.Channel) -> None:
        stub: node_pb2_grpc.NodeServiceAsyncStub = node_pb2_grpc.NodeServiceStub(channel)
        reply = await stub.Health(request, timeout=CALL_TIMEOUT)
        if not reply.serving:
            raise RuntimeError("the coordinator says it is not serving")

    async def first_call() -> tuple[float, set[int]]:
        credential = admin_credential(data_dir)  # as a new client process loads it
        started = time.perf_counter()
        channel = open_channel(address, credential, peer)
        try:
            await health(channel)
            elapsed = time.perf_counter() - started
            return elapsed, _connections_to(address)
        finally:
            await channel.close()

    warm = open_channel(address, admin_credential(data_dir), peer)
    try:
        await health(warm)
        # Unmeasured: the first channel of a process pays for gRPC's own set-up as well.
        _, seen = await first_call()
        firsts: list[float] = []
        warms: list[float] = []
        for _ in range(SAMPLES):
            elapsed, ports = await first_call()
            new = ports - seen
            if len(new) != 1:
                raise RuntimeError(
                    f"a first call did not open one connection of its own (new local ports "
                    f"{sorted(new)}): it would not have measured a handshake"
                )
            seen |= new
            firsts.append(elapsed)
            started = time.perf_counter()
            await health(warm)
            warms.append(time.perf_counter() - started)
        return firsts, warms
    finally:
        await warm.close()


def _spread(values: list[float]) -> str:
    deciles = statistics.quantiles(values, n=10)
    return (
        f"p10 {1000 * deciles[0]:.2f}, p90 {1000 * deciles[-1]:.2f}, max {1000 * max(values):.2f}"
    )


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="vcnode-bench-tls-") as root:
        data_dir = Path(root) / "coordinator"
        coordinator = start_daemon(
            data_dir, "--role", "coordinator", "--listen", "127.0.0.1:0",
            "--cluster", f"bench-{int(time.time())}", "--no-mdns",
        )  # fmt: skip
        try:
            address = wait_for_address(coordinator, data_dir)
            firsts, warms = asyncio.run(_measure(address, data_dir))
        finally:
            stop(coordinator)
    first, warm = statistics.median(firsts), statistics.median(warms)
    print(
        f"tls_handshake: {SAMPLES} samples each: first call on a new mTLS channel median "
        f"{1000 * first:.2f} ms ({_spread(firsts)}); warm call median {1000 * warm:.2f} ms "
        f"({_spread(warms)}); ratio {first / warm:.1f}",
        file=sys.stderr,
    )
    return [
        Figure("tls_handshake_ms", 1000 * first, "ms", "<=", TARGET_MS),
        Figure("tls_handshake_warm_call_ms", 1000 * warm, "ms", "<=", TARGET_MS),
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure.line(), flush=True)
