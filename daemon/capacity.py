"""Whether a machine, under its owner's limits, can hold a task at all. Shared by the
coordinator's matching and the volunteer's own decision, so both say the same thing."""

from __future__ import annotations

import math
from dataclasses import dataclass

from daemon.models import OwnerLimits, Resources, TaskSpec

# Tasks a volunteer takes beyond its free slots, to fetch their inputs while its containers
# run (work buffering, as BOINC does): the next task starts the moment a slot frees.
PREFETCH_TASKS = 1
# Slots one volunteer may have, whatever it claims: a claim of 1,000 would draw every task.
MAX_SLOTS = 64


def task_slots(limits: OwnerLimits) -> int:
    """How many tasks run at once on a volunteer."""
    return min(MAX_SLOTS, max(1, limits.max_concurrent_tasks))


def held_tasks(limits: OwnerLimits) -> int:
    """How many tasks a volunteer holds at once: running, or fetched and waiting."""
    return task_slots(limits) + PREFETCH_TASKS


def _cap(machine: float, owner_limit: float) -> float:
    return min(machine, owner_limit or math.inf)


@dataclass(frozen=True)
class Shortfall:
    """Why a machine can never hold a task: which request it cannot meet, and in words."""

    # The task's request that is too large: memory_mb, cpus, disk_mb, gpus or network.
    resource: str
    message: str

    def __str__(self) -> str:
        return self.message


RUNTIME_MISSING = "has no Docker engine and does not allow the process runtime"


def capacity_problem(task: TaskSpec, resources: Resources, limits: OwnerLimits) -> Shortfall | None:
    """Why this machine can never run this task, or None if it can."""
    wanted = task.resources
    memory = _cap(resources.memory_mb, limits.max_memory_mb)
    if wanted.memory_mb > memory:
        return Shortfall(
            "memory_mb", f"not enough memory: needs {wanted.memory_mb} MiB, may use {memory:g}"
        )
    cpus = _cap(resources.cpu_cores, limits.max_cpus)
    if wanted.cpus > cpus:
        return Shortfall("cpus", f"not enough CPUs: needs {wanted.cpus:g}, may use {cpus:g}")
    disk = _cap(resources.disk_free_mb, limits.max_disk_mb)
    if wanted.disk_mb > disk:
        return Shortfall(
            "disk_mb", f"not enough disk: needs {wanted.disk_mb} MiB, may use {disk:g}"
        )
    if wanted.gpus > resources.gpus:
        return Shortfall("gpus", f"not enough GPUs: needs {wanted.gpus}, has {resources.gpus}")
    if task.network and not limits.allow_network:
        return Shortfall("network", "network not allowed by the owner")
    if not (resources.docker_available or limits.allow_process_runtime):
        return Shortfall("runtime", RUNTIME_MISSING)
    return None
