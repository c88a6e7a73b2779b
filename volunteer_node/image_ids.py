"""Docker image IDs, remembered for a few seconds.

Every offer and every task asks which image a tag names (to decline tasks pinned to an
image we do not hold, and to check before running), and each ask is a Docker API call
competing with the containers being started: for a stream of short tasks that is two
calls per task for an answer that almost never changes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

IMAGE_ID_TTL_SECONDS = 10.0


class ImageIds:
    def __init__(
        self,
        lookup: Callable[[str], Awaitable[str | None]],
        ttl: float = IMAGE_ID_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._clock = clock
        self._known: dict[str, tuple[str | None, float]] = {}

    async def get(self, image: str) -> str | None:
        """The image's ID, or None when Docker does not have it."""
        now = self._clock()
        cached = self._known.get(image)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        image_id = await self._lookup(image)
        self._known[image] = (image_id, now)
        return image_id

    def forget(self) -> None:
        """After this volunteer loaded an image: ask Docker again."""
        self._known.clear()
