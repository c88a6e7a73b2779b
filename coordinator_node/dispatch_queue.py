"""The queued tasks in the order they came, for dispatch to take from the front.

Dispatch runs at every result, so it must not walk every task the coordinator knows: a heap
of (submission order, task id) gives the front in O(log n). A task leaving the queue from
the middle (cancelled, say) is only forgotten; its heap entry is dropped when it reaches the
front, or serves again if the task comes back first (its order never changes).
"""

from __future__ import annotations

import heapq
from typing import Generic, Protocol, TypeVar


class Queueable(Protocol):
    @property
    def task_id(self) -> str: ...

    @property
    def order(self) -> int: ...


T = TypeVar("T", bound=Queueable)


class DispatchQueue(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._members: dict[str, T] = {}
        # Ids with an entry in the heap (a member's, or a stale one left by `discard`).
        self._in_heap: set[str] = set()

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._members

    def add(self, task: T) -> None:
        self._members[task.task_id] = task
        if task.task_id not in self._in_heap:
            heapq.heappush(self._heap, (task.order, task.task_id))
            self._in_heap.add(task.task_id)

    def discard(self, task_id: str) -> None:
        self._members.pop(task_id, None)

    def pop_front(self) -> T | None:
        """Takes the earliest task out of the queue; None when it is empty."""
        while self._heap:
            _, task_id = heapq.heappop(self._heap)
            self._in_heap.discard(task_id)
            task = self._members.pop(task_id, None)
            if task is not None:
                return task
        return None
