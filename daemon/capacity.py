"""Whether a machine, under its owner's limits, can hold a task at all. Shared by the
coordinator's matching and the volunteer's own decision, so both say the same thing."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
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


# An image ID as `docker image inspect` gives it: an allow_images entry of this form is
# matched against image IDs, any other entry against the image reference.
DIGEST_PREFIX = "sha256:"


def is_digest(entry: str) -> bool:
    return entry.startswith(DIGEST_PREFIX)


def image_allowed(image: str, image_ids: Iterable[str], allowed: Iterable[str]) -> bool:
    """Whether an allow_images list lets this image run: a pattern (fnmatch, case-sensitive:
    `vcnode/*`, `ghcr.io/lab/tool:*`) matches the reference as the task names it, a
    `sha256:` entry equals one of `image_ids`."""
    ids = set(image_ids)
    return any(
        entry in ids if is_digest(entry) else fnmatch.fnmatchcase(image, entry) for entry in allowed
    )


def allow_problem(
    task: TaskSpec, limits: OwnerLimits, manager_id: str, image_id: str | None
) -> Shortfall | None:
    """Why the owner's allow-lists refuse this task, or None.

    `manager_id` must be what the coordinator authenticated (the certificate of the manager
    that submitted the task), never what a manager wrote in a spec. The task's `user` is
    the manager's word: it authenticated whoever submitted the workflow, and a volunteer
    that allows a manager trusts it for that. `image_id` is the image
    ID that will run: the one the task pins (the volunteer runs no other), else the one the
    volunteer has under that name; None when unknown. Digest entries cannot be checked
    against an unknown ID: the coordinator (which never knows it) then lets the volunteer
    decide, and the volunteer, which resolves it, declines.
    """
    if limits.allow_managers and manager_id not in limits.allow_managers:
        return Shortfall(
            "manager",
            f"manager {manager_id or '(unknown)'} is not in this volunteer's allow_managers",
        )
    if limits.allow_users and task.user not in limits.allow_users:
        # The manager's word: it authenticated the person who submitted the workflow.
        return Shortfall(
            "user",
            f"user {task.user or '(none: a node submitted it)'} is not in this volunteer's "
            "allow_users",
        )
    if limits.allow_images:
        running = task.image_id or image_id
        if not image_allowed(task.image, [running] if running else [], limits.allow_images):
            return Shortfall("image", f"image {task.image} is not in this volunteer's allow_images")
    return None


def coordinator_allow_problem(
    task: TaskSpec, limits: OwnerLimits, manager_id: str
) -> Shortfall | None:
    """`allow_problem` as far as the coordinator can tell, not knowing volunteers' images:
    a task pinning no image ID may still match a digest entry there."""
    problem = allow_problem(task, limits, manager_id, None)
    if (
        problem is not None
        and problem.resource == "image"
        and not task.image_id
        and any(is_digest(entry) for entry in limits.allow_images)
    ):
        return None
    return problem


# --- the owner's caps as the whole machine's ------------------------------------------------
# `max_cpus` and `max_memory_mb` bound what all the tasks running at once use together, not
# each task: three tasks of 1 CPU under a 2-CPU cap run two at a time. A volunteer holds
# tasks that can all run together, and one more fetched ahead; the coordinator offers it no
# more than that, and the volunteer starts a task only beside what runs within them.


@dataclass(frozen=True)
class Needs:
    cpus: float
    memory_mb: int


def needs_of(task: TaskSpec, limits: OwnerLimits) -> Needs:
    """What the task's container is given: its CPUs (1 unless it asks), never more than the
    owner's cap (as its run spec says), and the memory it asks for."""
    cpus = task.resources.cpus or 1.0
    if limits.max_cpus:
        cpus = min(cpus, limits.max_cpus)
    return Needs(cpus, task.resources.memory_mb)


def fit_together(needs: Iterable[Needs], limits: OwnerLimits) -> bool:
    """Whether tasks of these needs may all run at once under the owner's caps."""
    listed = list(needs)
    cpus = sum(need.cpus for need in listed)
    memory = sum(need.memory_mb for need in listed)
    # A hair of slack: 0.1 + 0.2 CPUs must fit a 0.3 cap.
    if limits.max_cpus and cpus > limits.max_cpus + 1e-9:
        return False
    return not (limits.max_memory_mb and memory > limits.max_memory_mb)


def caps_text(limits: OwnerLimits) -> str:
    caps = [
        f"{limits.max_cpus} CPU{'s' if limits.max_cpus != 1 else ''}" if limits.max_cpus else "",
        f"{limits.max_memory_mb} MiB" if limits.max_memory_mb else "",
    ]
    return " and ".join(cap for cap in caps if cap)
