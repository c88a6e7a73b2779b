"""Whether this volunteer takes a task: a pure decision with a reason for every "no".

The coordinator already matches tasks to volunteers, but the machine's owner has the last
word: the volunteer checks again against what it really has right now.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.capacity import allow_problem, capacity_problem, held_tasks
from daemon.models import OwnerLimits, Resources, TaskSpec


@dataclass(frozen=True)
class Situation:
    """What the volunteer knows when an offer arrives."""

    resources: Resources
    limits: OwnerLimits
    running: int
    # "docker", "process", or None when nothing can run tasks here.
    runtime: str | None
    # The local image's ID for the task's image (docker runtime), None if absent.
    image_id: str | None


def decline_reason(task: TaskSpec, situation: Situation) -> str | None:
    most = held_tasks(situation.limits)
    if situation.running >= most:
        return f"busy: holding {situation.running} of {most} tasks"
    shortfall = capacity_problem(task, situation.resources, situation.limits)
    # The offer's manager_id is the coordinator's word (the certificate of the manager that
    # submitted the task), not the manager's: the coordinator sets it on every offer.
    shortfall = shortfall or allow_problem(
        task, situation.limits, task.manager_id, situation.image_id
    )
    if shortfall is not None:
        return shortfall.message
    if situation.runtime is None:
        return "no Docker engine here and the owner does not allow the process runtime"
    if (
        situation.runtime == "docker"
        and not task.image_from_manager
        and not situation.limits.allow_pull
    ):
        # Unless the image can come from the manager or its registry, only ours can serve.
        if situation.image_id is None:
            return f"image {task.image} is not on this volunteer"
        if task.image_id and task.image_id != situation.image_id:
            return f"image {task.image} here is {situation.image_id}, the task pins {task.image_id}"
    return None
