"""discovery_latency: from starting an mDNS browser to knowing a coordinator's address."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.daemons import start_daemon, stop, wait_for_address
from benchmarks.report import Figure
from daemon.discovery.browsing import listening
from daemon.discovery.peers import PeerTable

ROUNDS = 7


async def _time_discovery(cluster: str, node_id: str) -> float:
    def found(table: PeerTable) -> bool | None:
        return any(p.node_id == node_id for p in table.coordinators()) or None

    started = time.perf_counter()
    async with listening(cluster, ("127.0.0.1",)) as directory:
        if not await directory.wait_for(found, 5.0):
            raise RuntimeError("the coordinator was not found within 5 s")
        return time.perf_counter() - started


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="vcnode-bench-") as root:
        cluster = f"bench-{int(time.time())}"
        data_dir = Path(root) / "coordinator"
        coordinator = start_daemon(
            data_dir, "--role", "coordinator", "--listen", "127.0.0.1:0", "--cluster", cluster
        )
        try:
            wait_for_address(coordinator, data_dir)
            node_id = (data_dir / "node_id").read_text().strip()
            # Registration probes the name first; time discovery of a node already announced.
            time.sleep(2.0)
            latencies = [asyncio.run(_time_discovery(cluster, node_id)) for _ in range(ROUNDS)]
        finally:
            stop(coordinator)
    return [Figure("discovery_latency", statistics.median(latencies), "s", "<=", 0.5)]
