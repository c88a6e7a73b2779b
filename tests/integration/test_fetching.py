"""A task a volunteer accepted is `fetching` until its container starts, then `running`: real
daemons as processes (coordinator, manager and a volunteer of one slot), real Docker. The
volunteer holds one task beyond its slot, fetched ahead while the slot is busy: that one is
seen fetching, then running once the slot frees, and no more tasks run than there are slots."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from daemon.models import WorkflowCounts, WorkflowStatus, WorkflowUpdate
from daemon.rpc.v1 import manager_pb2, manager_pb2_grpc
from daemon.transport import convert
from daemon.transport.channels import open_sync_channel
from tests.integration.harness import (
    POLL_SECONDS,
    Daemon,
    Daemons,
    cli_json,
    run_cli,
    start_split_pool,
    wait_until,
)
from tests.trust import admin_credential

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PHASES = ("fetching", "running", "completed")
SLOTS = 1  # a volunteer's default: one task runs, one more is held fetched ahead
TASKS = 3
# Long enough for the CLI to see the fetched-ahead task as it waits for the slot.
RUN_SECONDS = 6
WORKFLOW = '[workflow]\nname = "phases"\nvalidation = "none"\n' + "".join(
    f'\n[[tasks]]\nname = "t{i}"\n'
    f'command = ["sh", "-c", "sleep {RUN_SECONDS}; echo {i} > /output/out.txt"]\n'
    'outputs = ["out.txt"]\n'
    for i in range(TASKS)
)


class Manager:
    """The manager's gRPC service as an admin sees it (fast enough to poll)."""

    def __init__(self, address: str) -> None:
        self._channel = open_sync_channel(address, admin_credential())
        self.stub = manager_pb2_grpc.ManagerServiceStub(self._channel)

    def status(self, workflow_id: str) -> WorkflowStatus:
        request = manager_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id)
        return convert.workflow_status_from_proto(self.stub.GetWorkflowStatus(request, timeout=5))

    def close(self) -> None:
        self._channel.close()


class Watch:
    """Every update the manager sends about the workflow, collected by a thread until the
    stream ends (the workflow ended) or the test closes it."""

    def __init__(self, manager: Manager, workflow_id: str) -> None:
        self.updates: list[WorkflowUpdate] = []
        self.error: grpc.RpcError | None = None
        self._call = manager.stub.WatchWorkflow(
            manager_pb2.WatchWorkflowRequest(workflow_id=workflow_id)
        )
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        try:
            for message in self._call:
                self.updates.append(convert.workflow_update_from_proto(message))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error

    def ended(self, timeout: float) -> list[WorkflowUpdate]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the watch did not end with the workflow"
        assert self.error is None, self.error
        return self.updates

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


def within_slots(counts: WorkflowCounts, where: str) -> None:
    assert counts.running <= SLOTS, f"{counts.running} running on {SLOTS} slot ({where})"
    assert counts.running + counts.fetching <= SLOTS + 1, f"held beyond the room ({where})"


def poll(
    manager: Manager, workflow_id: str, seen: list[WorkflowStatus], timeout: float
) -> Iterator[WorkflowStatus]:
    """Statuses of the workflow, every POLL_SECONDS until the deadline; each one checked
    against the slots and kept in `seen`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = manager.status(workflow_id)
        within_slots(status.counts, "status")
        seen.append(status)
        yield status
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out after {timeout:g} s; last seen: {seen[-1] if seen else None}")


def states(status: WorkflowStatus) -> dict[str, str]:
    return {task.name: task.state for task in status.tasks}


def test_a_task_held_for_a_busy_slot_is_fetching_then_running(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    pool = start_split_pool(daemons)
    address = pool.manager.address()
    workflow = tmp_path / "phases.toml"
    workflow.write_text(WORKFLOW)
    submitted = run_cli("submit", str(workflow), "--manager", address, "--json")
    assert submitted.returncode == 0, submitted.stderr + pool.manager.log
    workflow_id = str(json.loads(submitted.stdout)["workflow_id"])
    manager = Manager(address)
    watch = Watch(manager, workflow_id)
    seen: list[WorkflowStatus] = []
    try:
        # One task runs in the slot, one is held fetched ahead, the last waits its turn.
        held = next(
            status
            for status in poll(manager, workflow_id, seen, 90)
            if (status.counts.running, status.counts.fetching, status.counts.queued) == (1, 1, 1)
        )
        (fetched,) = [name for name, state in states(held).items() if state == "fetching"]
        (first,) = [name for name, state in states(held).items() if state == "running"]
        rows = {task.name: task for task in held.tasks}
        assert rows[fetched].volunteer_id == pool.volunteer.node_id, "held by the volunteer"

        shown = cli_json("status", workflow_id, "--manager", address)
        assert shown["counts"]["fetching"] == 1, shown
        assert shown["counts"]["running"] == 1, shown
        assert {t["name"]: t["state"] for t in shown["tasks"]}[fetched] == "fetching", shown
        why = run_cli("status", workflow_id, "--why", fetched, "--manager", address)
        assert why.returncode == 0, why.stderr
        assert f"task {fetched} (fetching)" in why.stdout
        assert (
            "holds it: fetching its inputs (and image), or waiting there for a free slot (or "
            "room within its owner's caps)" in (why.stdout)
        )

        # The slot frees: the task fetched ahead starts, and another is fetched behind it.
        started = next(
            status
            for status in poll(manager, workflow_id, seen, 60)
            if states(status)[fetched] == "running"
        )
        assert states(started)[first] == "completed"
        # Merging comes between running and completed: the end is after it.
        done = next(
            status
            for status in poll(manager, workflow_id, seen, 90)
            if status.state not in ("running", "merging")
        )
        assert done.state == "completed", done
        updates = watch.ended(30)
    finally:
        watch.close()
        manager.close()

    for update in updates:
        within_slots(update.counts, f"update {update.kind} of {update.task_id}")
    # Each task the watch saw accepted ran after it was fetched; the last one queued was
    # accepted long after the watch began.
    phases = {
        task.task_id: [u.kind for u in updates if u.task_id == task.task_id and u.kind in PHASES]
        for task in held.tasks
    }
    seen_fetching = [kinds for kinds in phases.values() if "fetching" in kinds]
    assert seen_fetching, phases
    for kinds in seen_fetching:
        assert kinds == ["fetching", "running", "completed"], phases
    assert any(u.counts.fetching == 1 and u.counts.running == 1 for u in updates), updates
    results = cli_json("status", workflow_id, "--manager", address)
    assert results["counts"] == {
        "queued": 0,
        "running": 0,
        "fetching": 0,
        "completed": TASKS,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
        "total": TASKS,
    }


def coordinator_states(coordinator: Daemon, workflow_id: str) -> list[str]:
    """The coordinator's own word on the workflow's tasks, from its store."""
    path = coordinator.data_dir / "coordinator.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        rows = db.execute("SELECT state FROM tasks WHERE workflow_id = ?", [workflow_id])
        return [state for (state,) in rows]


def test_a_start_the_coordinator_lost_in_a_crash_is_said_again_when_its_volunteer_reconnects(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    """The coordinator is killed while a task runs and comes back from a store that has it
    `fetching`, as when it crashed between hearing that the task started and saving that:
    the volunteer, reconnecting, says again that it runs, and the coordinator has it
    running long before its result."""
    pool = start_split_pool(daemons)
    (coordinator,) = [d for d in daemons.started if d.data_dir.name == "coordinator"]
    address = pool.manager.address()
    workflow = tmp_path / "long.toml"
    workflow.write_text(
        '[workflow]\nname = "long"\nvalidation = "none"\n\n[[tasks]]\nname = "t"\n'
        'command = ["sh", "-c", "sleep 90; echo done > /output/out.txt"]\n'
        'outputs = ["out.txt"]\n'
    )
    workflow_id = str(cli_json("submit", str(workflow), "--manager", address)["workflow_id"])
    try:
        wait_until(
            lambda: coordinator_states(coordinator, workflow_id) == ["running"],
            90,
            "the task to start",
        )
        coordinator.kill()
        with sqlite3.connect(coordinator.data_dir / "coordinator.db") as db:
            db.execute("UPDATE tasks SET state = 'fetching' WHERE workflow_id = ?", [workflow_id])
        args = [pool.coordinator_address if a == "127.0.0.1:0" else a for a in coordinator.args]
        restarted = daemons.start("coordinator", *args, data_dir=coordinator.data_dir)
        assert restarted.address() == pool.coordinator_address

        def told() -> str | None:
            (state,) = coordinator_states(restarted, workflow_id)
            return state if state != "fetching" else None

        # Before its result (90 s on): only the volunteer's word can have moved it.
        assert wait_until(told, 45, "the coordinator to hear the task runs") == "running"
        assert cli_json("status", workflow_id, "--manager", address)["counts"]["running"] == 1
    finally:
        run_cli("cancel", workflow_id, "--manager", address)
