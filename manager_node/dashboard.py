"""The manager's part of the web dashboard: workflows, their tasks and logs, live updates,
chart figures and Prometheus metrics. Imported only by a node started with `--http`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from daemon.errors import InvalidInputError, NotFoundError
from daemon.models import WorkflowStatus, WorkflowUpdate
from daemon.transfer.servicer import TransferServicer
from daemon.web.site import Query, WebSite
from manager_node.manager import WorkflowManager
from manager_node.ownership import check_may_see, may_see
from manager_node.store import ManagerStore

log = logging.getLogger(__name__)

# The page shows the end of a long log; `vcnode logs` gives all of it.
MAX_LOG_BYTES = 256 * 1024
# Task rows a workflow's page gets at most (`vcnode status --all` lists every one): those
# running and failed first, then the latest to change.
MAX_TASK_ROWS = 500
MAX_FAILURES = 100
# Rate and ETA look at the tasks that ended in this window.
RATE_WINDOW_SECONDS = 600.0
# Updates waiting to go to the pages, at most.
MAX_PENDING_UPDATES = 10_000
# A workflow's own update in one of these states is its last.
_ENDED = frozenset({"completed", "failed", "cancelled"})
TASK_STATES = ("queued", "fetching", "running", "completed", "failed", "cancelled", "skipped")


class ManagerDashboard:
    def __init__(
        self, manager: WorkflowManager, store: ManagerStore, transfers: TransferServicer
    ) -> None:
        self._manager = manager
        self._store = store
        self._transfers = transfers
        self._updates: asyncio.Queue[WorkflowUpdate] = asyncio.Queue(MAX_PENDING_UPDATES)
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
            for status in await self._store.summaries()
            if may_see(status.owner, query.caller)
        ]

    async def workflow(self, query: Query) -> dict[str, Any]:
        workflow_id = query.path["workflow_id"]
        await check_may_see(self._store, workflow_id, query.caller)
        found = await self._store.summaries(workflow_id)
        if not found:  # deleted since the check
            raise NotFoundError(f"no workflow {workflow_id!r} on this manager")
        status = found[0]
        now = time.time()
        window = max(1.0, min(RATE_WINDOW_SECONDS, now - status.created_at))
        rate = round(60 * await self._store.ended_since(workflow_id, now - window) / window, 2)
        counts = status.counts
        remaining = counts.queued + counts.fetching + counts.running
        failures, failed = await self._store.failures(workflow_id, MAX_FAILURES)
        timeline = await self._store.timeline(workflow_id, MAX_TASK_ROWS)
        return {
            **_summary(status),
            "rate_per_minute": rate,
            "eta_seconds": round(60 * remaining / rate) if rate and remaining else None,
            "tasks": [asdict(row) for row in timeline],
            "tasks_total": counts.total,
            "failures": [
                {"task_id": task_id, "name": name, "error": error}
                for task_id, name, error in failures
            ],
            "failures_total": failed,
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
        if self._updates.full():
            # Nobody's page can keep up with this many: the oldest go (a page's next
            # re-read shows where things stand).
            self._updates.get_nowait()
        self._updates.put_nowait(update)

    async def _publish_forever(self, site: WebSite) -> None:
        while True:
            update = await self._updates.get()
            try:
                owner = await self._owner_of(update.workflow_id)
            except Exception:  # one failed read must not end every page's live view
                log.exception("no owner found for workflow %s's update", update.workflow_id)
                continue
            if not update.task_id and update.kind in _ENDED:
                self._owners.pop(update.workflow_id, None)  # it says nothing more
            data = {
                "workflow_id": update.workflow_id,
                "task_id": update.task_id,
                "kind": update.kind,
                "message": update.message,
                "at": update.at,
                "counts": asdict(update.counts),
            }
            site.publish("workflow", data, owner=owner)

    async def _owner_of(self, workflow_id: str) -> str:
        owner = self._owners.get(workflow_id)
        if owner is None:
            owner = await self._store.workflow_owner(workflow_id) or ""
            self._owners[workflow_id] = owner
        return owner

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
