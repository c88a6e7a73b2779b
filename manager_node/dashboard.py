"""The manager's part of the web dashboard: workflows, their tasks and logs, live updates,
chart figures and Prometheus metrics. Imported only by a node started with `--http`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from daemon.errors import InvalidInputError
from daemon.models import WorkflowStatus, WorkflowUpdate
from daemon.transfer.servicer import TransferServicer
from daemon.web.site import Query, WebSite
from manager_node.manager import WorkflowManager
from manager_node.ownership import check_may_see, may_see
from manager_node.store import ManagerStore, TimelineRow

# The page shows the end of a long log; `vcnode logs` gives all of it.
MAX_LOG_BYTES = 256 * 1024
# Task rows a workflow's page gets at most (`vcnode status --all` lists every one).
MAX_TASK_ROWS = 500
# Rate and ETA look at the tasks that ended in this window.
RATE_WINDOW_SECONDS = 600.0
TASK_STATES = ("queued", "fetching", "running", "completed", "failed", "cancelled", "skipped")


class ManagerDashboard:
    def __init__(
        self, manager: WorkflowManager, store: ManagerStore, transfers: TransferServicer
    ) -> None:
        self._manager = manager
        self._store = store
        self._transfers = transfers
        self._updates: asyncio.Queue[WorkflowUpdate] = asyncio.Queue()
        self._owners: dict[str, str] = {}
        self._completed = 0

    def attach(self, site: WebSite) -> None:
        site.get("workflows", self.workflows)
        site.get("workflows/{workflow_id}", self.workflow)
        site.get("workflows/{workflow_id}/tasks/{task}/log", self.task_log)
        site.sample(self.sample)
        site.collect([self])
        self._manager.listeners.append(self._heard)
        site.background.append(lambda: self._publish_forever(site))

    # --- endpoints ------------------------------------------------------------------------

    async def workflows(self, query: Query) -> list[dict[str, Any]]:
        return [
            _summary(status)
            for status in reversed(await self._store.workflows())
            if may_see(status.owner, query.caller)
        ]

    async def workflow(self, query: Query) -> dict[str, Any]:
        workflow_id = query.path["workflow_id"]
        await check_may_see(self._store, workflow_id, query.caller)
        found = await self._store.workflows(workflow_id)
        timeline = await self._store.timeline(workflow_id)
        status = found[0]
        rate = _rate_per_minute(timeline, status.created_at, time.time())
        remaining = (
            status.counts.total
            - sum(getattr(status.counts, state) for state in ("completed", "failed", "cancelled"))
            - status.counts.skipped
        )
        return {
            **_summary(status),
            "rate_per_minute": rate,
            "eta_seconds": round(60 * remaining / rate) if rate and remaining else None,
            "tasks": [asdict(row) for row in _shown(timeline)],
            "tasks_total": len(timeline),
            "failures": [
                {"task_id": row.task_id, "name": row.name, "error": row.error}
                for row in timeline
                if row.state == "failed"
            ],
        }

    async def task_log(self, query: Query) -> dict[str, Any]:
        workflow_id = query.path["workflow_id"]
        await check_may_see(self._store, workflow_id, query.caller)
        stream = query.args.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise InvalidInputError(f"stream must be stdout or stderr, not {stream!r}")
        found = await self._manager.task_log(workflow_id, query.path["task"], stream)
        content = found.content
        note = found.note
        if len(content) > MAX_LOG_BYTES:
            cut = len(content) - MAX_LOG_BYTES
            content = content[cut:]
            note = "; ".join(
                filter(None, [f"the first {cut} bytes are left out here (`vcnode logs`)", note])
            )
        return {
            "task_id": found.task_id,
            "name": found.name,
            "state": found.state,
            "stream": stream,
            "content": content.decode("utf-8", "replace"),
            "note": note,
        }

    # --- live -----------------------------------------------------------------------------

    def _heard(self, update: WorkflowUpdate) -> None:
        if update.task_id and update.kind == "completed":
            self._completed += 1
        self._updates.put_nowait(update)

    async def _publish_forever(self, site: WebSite) -> None:
        while True:
            update = await self._updates.get()
            owner = self._owners.get(update.workflow_id)
            if owner is None:
                owner = await self._store.workflow_owner(update.workflow_id) or ""
                self._owners[update.workflow_id] = owner
            data = {
                "workflow_id": update.workflow_id,
                "task_id": update.task_id,
                "kind": update.kind,
                "message": update.message,
                "at": update.at,
                "counts": asdict(update.counts),
            }
            site.publish("workflow", data, owner=owner)

    async def sample(self) -> Mapping[str, float]:
        counts = self._manager.active_counts()
        return {
            "tasks_completed": self._completed,
            "tasks_queued": counts["queued"],
            "tasks_running": counts["running"] + counts["fetching"],
        }

    # --- Prometheus -----------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "vcnode_tasks",
            "Tasks of the workflows not ended, by state",
            labels=["state"],
        )
        counts = self._manager.active_counts()
        for state in TASK_STATES:
            tasks.add_metric([state], counts[state])
        yield tasks
        completed = CounterMetricFamily(
            "vcnode_tasks_completed", "Tasks completed since the manager started"
        )
        completed.add_metric([], self._completed)
        yield completed
        moved = CounterMetricFamily(
            "vcnode_transfer_bytes",
            "Bytes of files this manager served (sent) and took (received) since it started",
            labels=["direction"],
        )
        moved.add_metric(["sent"], self._transfers.bytes_sent)
        moved.add_metric(["received"], self._transfers.bytes_received)
        yield moved


def _shown(timeline: list[TimelineRow]) -> list[TimelineRow]:
    """The rows a page gets: those held by a volunteer and those that failed first, then
    the latest to change, in task order (a page of a huge workflow stays small)."""
    if len(timeline) <= MAX_TASK_ROWS:
        return timeline
    urgent = {"running": 0, "fetching": 0, "failed": 1}
    ranked = sorted(
        range(len(timeline)),
        key=lambda i: (urgent.get(timeline[i].state, 2), -timeline[i].updated_at),
    )
    return [timeline[i] for i in sorted(ranked[:MAX_TASK_ROWS])]


def _summary(status: WorkflowStatus) -> dict[str, Any]:
    return {
        "workflow_id": status.workflow_id,
        "name": status.name,
        "type": status.type,
        "state": status.state,
        "owner": status.owner,
        "created_at": status.created_at,
        "updated_at": status.updated_at,
        "error": status.error,
        "counts": asdict(status.counts),
    }


def _rate_per_minute(timeline: list[TimelineRow], created_at: float, now: float) -> float:
    """Tasks ended per minute over the last ten minutes (or since the workflow began)."""
    window = max(1.0, min(RATE_WINDOW_SECONDS, now - created_at))
    ended = sum(
        row.state in ("completed", "failed") and row.updated_at >= now - window for row in timeline
    )
    return round(60 * ended / window, 2)
