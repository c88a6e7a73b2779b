"""Which of the volunteer's cached blobs may go when a fetch needs room: pure bookkeeping.

The volunteer keeps what it fetched for later tasks, within its owner's disk cap. When a
fetch needs room, the blobs used least recently go first, and a blob in use (being fetched,
or being handed to a task) never goes. Tasks get hard links or copies of their inputs, so a
blob evicted after that cannot hurt a task that started with it.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable


class CacheIndex:
    """Blobs by last use, and which are in use."""

    def __init__(self) -> None:
        # sha256 -> size, least recently used first.
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._pins: Counter[str] = Counter()
        # Fetches under way: sha256 -> size. Their bytes are about to be taken.
        self._incoming: dict[str, int] = {}

    def load(self, blobs: Iterable[tuple[str, int]]) -> None:
        """Blobs held at start-up, oldest first (last use is not known across restarts:
        arrival stands in for it)."""
        for sha256, size in blobs:
            self._sizes[sha256] = size

    def pin(self, sha256: str) -> None:
        self._pins[sha256] += 1

    def unpin(self, sha256: str) -> None:
        self._pins[sha256] -= 1
        if not self._pins[sha256]:
            del self._pins[sha256]

    def used(self, sha256: str, size: int) -> None:
        self._sizes[sha256] = size
        self._sizes.move_to_end(sha256)

    def forget(self, sha256: str) -> None:
        self._sizes.pop(sha256, None)

    def fetching(self, sha256: str, size: int) -> None:
        self._incoming[sha256] = size

    def fetched(self, sha256: str) -> None:
        self._incoming.pop(sha256, None)

    def room_needed(self, sha256: str, size: int) -> int:
        """Bytes to free for a new fetch: its own, and those of the fetches under way whose
        bytes may not be claimed yet (counting some twice frees a little too much, never
        too little)."""
        return size + sum(n for sha, n in self._incoming.items() if sha != sha256)

    def victims(self) -> list[str]:
        """Blobs that may go, least recently used first."""
        return [sha256 for sha256 in self._sizes if sha256 not in self._pins]
