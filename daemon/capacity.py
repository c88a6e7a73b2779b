"""Whether a machine, under its owner's limits, can hold a task at all. Shared by the
coordinator's matching and the volunteer's own decision, so both say the same thing."""

from __future__ import annotations

import math

from daemon.models import OwnerLimits, Resources, TaskSpec


def _cap(machine: float, owner_limit: float) -> float:
    return min(machine, owner_limit or math.inf)


def capacity_problem(task: TaskSpec, resources: Resources, limits: OwnerLimits) -> str | None:
    """Why this machine can never run this task, or None if it can."""
    wanted = task.resources
    memory = _cap(resources.memory_mb, limits.max_memory_mb)
    if wanted.memory_mb > memory:
        return f"not enough memory: needs {wanted.memory_mb} MiB, may use {memory:g}"
    cpus = _cap(resources.cpu_cores, limits.max_cpus)
    if wanted.cpus > cpus:
        return f"not enough CPUs: needs {wanted.cpus:g}, may use {cpus:g}"
    disk = _cap(resources.disk_free_mb, limits.max_disk_mb)
    if wanted.disk_mb > disk:
        return f"not enough disk: needs {wanted.disk_mb} MiB, may use {disk:g}"
    if wanted.gpus > resources.gpus:
        return f"not enough GPUs: needs {wanted.gpus}, has {resources.gpus}"
    if task.network and not limits.allow_network:
        return "network not allowed by the owner"
    return None
