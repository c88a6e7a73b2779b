"""What the rest of the node sees of discovery: the peer table and a way to wait on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from daemon.discovery.peers import PeerTable

T = TypeVar("T")


class PeerDirectory:
    def __init__(self, table: PeerTable) -> None:
        self.table = table
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wakes every waiter; each then re-checks its own condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, pick: Callable[[PeerTable], T | None], within: float) -> T | None:
        """Returns pick(table) as soon as it is not None, or None after `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (found := pick(self.table)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return pick(self.table)
        return found
