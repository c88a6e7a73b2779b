"""The coordinator's queue of tasks waiting for a volunteer: submission order, whatever
leaves and comes back."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator_node.dispatch_queue import DispatchQueue


@dataclass
class Item:
    task_id: str
    order: int


def drain(queue: DispatchQueue[Item]) -> list[str]:
    taken = []
    while (item := queue.pop_front()) is not None:
        taken.append(item.task_id)
    return taken


def test_tasks_come_out_in_submission_order_whatever_order_they_went_in() -> None:
    queue: DispatchQueue[Item] = DispatchQueue()
    for task_id, order in [("c", 3), ("a", 1), ("b", 2)]:
        queue.add(Item(task_id, order))
    assert len(queue) == 3
    assert drain(queue) == ["a", "b", "c"]
    assert len(queue) == 0


def test_a_task_discarded_from_the_middle_is_skipped() -> None:
    queue: DispatchQueue[Item] = DispatchQueue()
    for order, task_id in enumerate("abc"):
        queue.add(Item(task_id, order))
    queue.discard("b")
    assert "b" not in queue
    assert drain(queue) == ["a", "c"]


def test_a_task_back_in_the_queue_takes_its_old_place_once() -> None:
    queue: DispatchQueue[Item] = DispatchQueue()
    items = [Item(task_id, order) for order, task_id in enumerate("abc")]
    for item in items:
        queue.add(item)
    queue.discard("a")
    queue.add(items[0])  # back before its stale entry was reached
    queue.add(items[0])  # and added twice: still one entry
    first = queue.pop_front()
    assert first is items[0]
    queue.add(first)  # taken and put back (dispatch could not place it)
    assert drain(queue) == ["a", "b", "c"]
