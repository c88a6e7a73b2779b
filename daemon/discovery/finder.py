"""Which coordinator to talk to: the one named, else one of our cluster found on mDNS,
preferring coordinators that have not just failed us (so a dead one is skipped at once)."""

from __future__ import annotations

import logging
import time

from daemon.discovery.directory import PeerDirectory
from daemon.discovery.peers import PeerTable

log = logging.getLogger(__name__)

# How long a coordinator that failed us is tried only when no other one is known.
FAILED_COOLDOWN_SECONDS = 30.0
DISCOVERY_WAIT_SECONDS = 5.0


class CoordinatorFinder:
    def __init__(self, explicit_address: str | None, directory: PeerDirectory | None) -> None:
        if explicit_address is None and directory is None:
            raise ValueError("a coordinator must be named or found on mDNS")
        self.explicit_address = explicit_address
        self._directory = directory
        self._failed_at: dict[str, float] = {}

    async def next_address(self) -> str:
        if self.explicit_address is not None:
            return self.explicit_address
        assert self._directory is not None
        waiting_logged = False
        while True:
            address = await self._directory.wait_for(self._best, DISCOVERY_WAIT_SECONDS)
            if address is not None:
                return address
            if not waiting_logged:
                log.warning("no coordinator of our cluster found on mDNS yet; still looking")
                waiting_logged = True

    def failed(self, address: str) -> None:
        self._failed_at[address] = time.monotonic()

    def worked(self, address: str) -> None:
        self._failed_at.pop(address, None)

    def _best(self, table: PeerTable) -> str | None:
        now = time.monotonic()
        candidates = [peer.address for peer in table.coordinators()]
        if not candidates:
            return None
        # Coordinators that have not failed recently first, then the one that failed longest ago.
        return min(
            candidates,
            key=lambda a: (
                now - self._failed_at.get(a, -1e9) < FAILED_COOLDOWN_SECONDS,
                self._failed_at.get(a, -1e9),
            ),
        )
