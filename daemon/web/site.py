"""What a role adds to the node's web dashboard, with no web framework in sight.

Roles describe their part (JSON endpoints, live events, chart samples, Prometheus
collectors) here; daemon/web/server.py serves it with aiohttp. Only a node started with
`--http` builds a site, so a node without it never imports the web stack.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.transport.access import Caller

# Chart samples: one every SAMPLE_SECONDS, an hour of them.
SAMPLE_SECONDS = 2.0
MAX_SAMPLES = 1800
# What one slow browser may have waiting before it is dropped (it reconnects and reloads).
MAX_QUEUED_EVENTS = 1024


@dataclass(frozen=True)
class Query:
    """A request as an endpoint sees it: the path's parameters and the query string."""

    path: Mapping[str, str]
    args: Mapping[str, str]
    caller: Caller


Endpoint = Callable[[Query], Awaitable[Any]]


@dataclass(frozen=True)
class LiveEvent:
    """Something to show at once. `owner` limits who sees it (a workflow's owner, and
    whoever sees everything); None shows it to every person."""

    kind: str
    data: Mapping[str, Any]
    owner: str | None = None

    def visible_to(self, caller: Caller) -> bool:
        return self.owner is None or caller.sees_everything or self.owner == caller.owner


class EventHub:
    """Fans live events out to every open page, each through its own bounded queue."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[LiveEvent | None]] = set()

    def publish(self, event: LiveEvent) -> None:
        for queue in list(self._queues):
            if queue.full():
                # A page that stopped reading loses its stream, never the node its memory.
                self._queues.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[LiveEvent | None]:
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[LiveEvent | None]) -> None:
        self._queues.discard(queue)

    def close(self) -> None:
        """Ends every open stream (the node is stopping)."""
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        self._queues.clear()

    def __len__(self) -> int:
        return len(self._queues)


@dataclass
class Samples:
    """Chart figures over time: each role adds named figures to every sample."""

    sources: list[Callable[[], Awaitable[Mapping[str, float]]]] = field(default_factory=list)
    history: deque[dict[str, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    async def take(self) -> dict[str, float]:
        sample: dict[str, float] = {"at": round(time.time(), 3)}
        for source in self.sources:
            sample.update(await source())
        self.history.append(sample)
        return sample


@dataclass
class WebSite:
    """The dashboard as the roles made it: served by daemon.web.server."""

    title: str
    # The node's roles, so the page shows only the views it can fill.
    roles: tuple[str, ...]
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    hub: EventHub = field(default_factory=EventHub)
    samples: Samples = field(default_factory=Samples)
    # prometheus_client collectors (objects with `collect()`), registered on the node's
    # own registry when the server starts.
    collectors: list[Any] = field(default_factory=list)
    # Work that runs while the server does (a role's feed of live events).
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def get(self, path: str, endpoint: Endpoint) -> None:
        """Serves `endpoint` at GET /api/<path> (aiohttp's {name} patterns)."""
        if path in self.endpoints:
            raise ValueError(f"two endpoints at /api/{path}")
        self.endpoints[path] = endpoint

    def publish(self, kind: str, data: Mapping[str, Any], owner: str | None = None) -> None:
        self.hub.publish(LiveEvent(kind, data, owner))

    def sample(self, source: Callable[[], Awaitable[Mapping[str, float]]]) -> None:
        self.samples.sources.append(source)

    def collect(self, collectors: Iterable[Any]) -> None:
        self.collectors.extend(collectors)
