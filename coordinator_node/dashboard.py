"""The coordinator's part of the web dashboard: the pool (volunteers, their state, load,
owners' caps and trust), the queue, chart figures and Prometheus metrics. Imported only by
a node started with `--http`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from coordinator_node.pool import Pool
from daemon.models import EventKind, TaskEvent, Volunteer, VolunteerState
from daemon.web.site import Query, WebSite

# Dispatch latency: from a task being queued (or requeued) to its offer going out.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0)
_ENDED = frozenset({EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED})


class DispatchClock:
    """Times each task from queued to offered, from the events the pool publishes."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._queued_at: dict[str, float] = {}

    def heard(self, event: TaskEvent) -> None:
        if event.kind in (EventKind.QUEUED, EventKind.REQUEUED, EventKind.DECLINED):
            self._queued_at.setdefault(event.task_id, event.at)
        elif event.kind is EventKind.OFFERED:
            since = self._queued_at.pop(event.task_id, None)
            if since is not None:
                self._histogram.observe(max(0.0, event.at - since))
        elif event.kind in _ENDED:
            self._queued_at.pop(event.task_id, None)

    def __len__(self) -> int:
        return len(self._queued_at)


class CoordinatorDashboard:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.dispatch_latency = Histogram(
            "vcnode_dispatch_latency_seconds",
            "From a task queued (or back in the queue) to its offer to a volunteer",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._clock = DispatchClock(self.dispatch_latency)

    def attach(self, site: WebSite) -> None:
        site.get("pool", self.pool)
        site.sample(self.sample)
        site.collect([self, self.dispatch_latency])
        self._pool.listeners.append(self._clock.heard)

    async def pool(self, query: Query) -> dict[str, Any]:
        volunteers = sorted(
            self._pool.volunteers(),
            key=lambda v: (v.state is not VolunteerState.ONLINE, v.hostname, v.volunteer_id),
        )
        return {
            "waiting_tasks": self._pool.waiting_tasks(),
            "volunteers": [_volunteer(v) for v in volunteers],
        }

    async def sample(self) -> Mapping[str, float]:
        online = [v for v in self._pool.volunteers() if v.state is VolunteerState.ONLINE]
        return {
            "volunteers_online": len(online),
            "pool_cpus": sum(_cpus(v) for v in online),
            "pool_cpus_in_use": round(
                sum(v.resources.cpu_cores * v.load.cpu_percent / 100 for v in online), 2
            ),
            "queue_length": self._pool.waiting_tasks(),
        }

    def collect(self) -> Iterator[Metric]:
        states = Counter(v.state.value for v in self._pool.volunteers())
        volunteers = GaugeMetricFamily(
            "vcnode_volunteers", "Volunteers the coordinator knows, by state", labels=["state"]
        )
        for state in VolunteerState:
            volunteers.add_metric([state.value], states[state.value])
        yield volunteers
        queue = GaugeMetricFamily(
            "vcnode_queue_length", "Tasks waiting for a volunteer (offers not yet sent)"
        )
        queue.add_metric([], self._pool.waiting_tasks())
        yield queue


def _cpus(volunteer: Volunteer) -> int:
    """The cores its owner lets the pool use."""
    cap = volunteer.limits.max_cpus
    return min(cap, volunteer.resources.cpu_cores) if cap else volunteer.resources.cpu_cores


def _volunteer(volunteer: Volunteer) -> dict[str, Any]:
    trust = volunteer.trust
    return {
        "volunteer_id": volunteer.volunteer_id,
        "hostname": volunteer.hostname,
        "owner": volunteer.owner,
        "version": volunteer.version,
        "state": volunteer.state.value,
        "connected": volunteer.connected,
        "first_seen": volunteer.first_seen,
        "last_seen": volunteer.last_seen,
        "cpus": _cpus(volunteer),
        "resources": {
            "cpu_cores": volunteer.resources.cpu_cores,
            "memory_mb": volunteer.resources.memory_mb,
            "disk_free_mb": volunteer.resources.disk_free_mb,
            "gpus": volunteer.resources.gpus,
            "docker": volunteer.resources.docker_available,
        },
        "limits": asdict(volunteer.limits),
        "load": asdict(volunteer.load),
        "trust": {
            "agreed": trust.agreed,
            "disagreed": trust.disagreed,
            "vouched": trust.vouched,
            "on_probation": trust.on_probation,
            "blocklisted": trust.blocklisted,
            "blocklist_reason": trust.blocklist_reason,
        },
    }
