"""Whether this volunteer takes a task: a pure decision with a reason for every "no".

The coordinator already matches tasks to volunteers, but the machine's owner has the last
word: the volunteer checks again against what it really has right now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    limits, resources = situation.limits, situation.resources
    wanted = task.resources
    slots = max(1, limits.max_concurrent_tasks)
    if situation.running >= slots:
        return f"busy: running {situation.running} of {slots} tasks"

    def cap(machine: float, owner_limit: float) -> float:
        return min(machine, owner_limit or math.inf)

    memory = cap(resources.memory_mb, limits.max_memory_mb)
    if wanted.memory_mb > memory:
        return f"not enough memory: needs {wanted.memory_mb} MiB, may use {memory:g}"
    cpus = cap(resources.cpu_cores, limits.max_cpus)
    if wanted.cpus > cpus:
        return f"not enough CPUs: needs {wanted.cpus:g}, may use {cpus:g}"
    disk = cap(resources.disk_free_mb, limits.max_disk_mb)
    if wanted.disk_mb > disk:
        return f"not enough disk: needs {wanted.disk_mb} MiB, may use {disk:g}"
    if wanted.gpus > resources.gpus:
        return f"not enough GPUs: needs {wanted.gpus}, has {resources.gpus}"
    if task.network and not limits.allow_network:
        return "network not allowed by the owner"
    if situation.runtime is None:
        return "no Docker engine here and the owner does not allow the process runtime"
    if situation.runtime == "docker" and task.image_archive is None:
        # Without an archive from the manager, only the local image can serve.
        if situation.image_id is None:
            return f"image {task.image} is not on this volunteer"
        if task.image_id and task.image_id != situation.image_id:
            return f"image {task.image} here is {situation.image_id}, the task pins {task.image_id}"
    return None
