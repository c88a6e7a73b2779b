"""Which volunteer holds which task, as the coordinator's events tell the manager.

The manager serves a volunteer only what a task it holds needs (inputs, the image) and takes
from it only that task's outputs. The volunteer hears of its offer on one stream and the
manager on another, so a volunteer may ask a moment before the manager knows: a question
about a holder waits a little for the event that would make it one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Set

from manager_node.workflow import WorkflowTask

# How long a volunteer's request waits for the manager to hear that it holds the task.
HOLDER_WAIT_SECONDS = 5.0


def holder_of(task: WorkflowTask) -> str:
    """The volunteer that holds `task`: the one that accepted it, fetching its inputs or
    running it; "" for a task declined, handed back, waiting or ended, whoever had it
    last."""
    return task.volunteer_id if task.status.held else ""


class Holders:
    def __init__(self, patience: float = HOLDER_WAIT_SECONDS) -> None:
        self._patience = patience
        self._holder: dict[str, str] = {}  # task id -> volunteer id
        self._held: dict[str, set[str]] = {}  # volunteer id -> task ids
        self._changed = asyncio.Event()

    def set(self, task_id: str, volunteer_id: str) -> None:
        """`volunteer_id` holds `task_id` now; "" when nobody does."""
        previous = self._holder.pop(task_id, "")
        if previous:
            tasks = self._held[previous]
            tasks.discard(task_id)
            if not tasks:
                del self._held[previous]
        if volunteer_id:
            self._holder[task_id] = volunteer_id
            self._held.setdefault(volunteer_id, set()).add(task_id)
        if volunteer_id != previous:
            # Wakes whoever waits, and gives later waiters a fresh event.
            self._changed.set()
            self._changed = asyncio.Event()

    def held_by(self, volunteer_id: str) -> Set[str]:
        return self._held.get(volunteer_id, frozenset())

    async def wait_for(
        self,
        volunteer_id: str,
        wanted: Callable[[Set[str]], bool],
    ) -> bool:
        """Whether `wanted` holds of the tasks `volunteer_id` holds, now or within the
        patience given."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._patience
        while not wanted(self.held_by(volunteer_id)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True
