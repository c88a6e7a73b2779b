"""Whether the pool can run a workflow at all, checked before anything is submitted: a task
no volunteer could ever hold would otherwise wait forever (HTCondor leaves such jobs idle;
we refuse them and say which key to change)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from daemon.capacity import Shortfall, capacity_problem
from daemon.models import TaskSpec, Volunteer, VolunteerState
from splitters.api import SplitterError


@dataclass(frozen=True)
class ProposedTask:
    """A task about to be submitted, with where its resources are set in the workflow."""

    name: str
    spec: TaskSpec
    # The key for a resource: `tasks[2].resources.` (explicit tasks, then + "memory_mb"),
    # or "" for a splitter, whose parameter is named like the resource if it has one.
    resources_key: str
    parameters: frozenset[str] = frozenset()
    # Copies that must agree (validation "quorum"), each on a volunteer of its own; 1 if
    # one copy may stand.
    distinct: int = 1
    # Where that number is set, for the message.
    distinct_key: str = "workflow.quorum"


IMAGE_HINT = (
    "pull or build it on the manager's host (the manager then ships it), or let volunteers "
    "pull it (--allow-pull)"
)


def inputs_mb(task: TaskSpec) -> int:
    """The disk a task's inputs take on a volunteer, in MiB rounded up."""
    return -(-sum(ref.size for ref in task.inputs) // 2**20)


def _key(task: ProposedTask, shortfall: Shortfall) -> str:
    resource = shortfall.resource
    if resource == "runtime":  # nothing in the task can fix it: the task as a whole
        return task.resources_key.removesuffix(".resources.") or "type"
    if resource == "disk_mb" and inputs_mb(task.spec) >= task.spec.resources.disk_mb:
        resource = "inputs"  # what takes the disk, whatever the task asked for
    if task.resources_key:
        if resource in ("network", "image", "inputs"):  # a task's own keys, beside resources
            return task.resources_key.removesuffix("resources.") + resource
        return task.resources_key + resource
    return resource if resource in task.parameters else "parameters"


def with_tag(image: str) -> str:
    """The image reference as Docker lists it: `name` means `name:latest`."""
    if "@" in image or ":" in image.rpartition("/")[2]:
        return image
    return f"{image}:latest"


def image_shortfall(task: TaskSpec, volunteer: Volunteer) -> Shortfall | None:
    """Why this volunteer could not get the task's image, as far as the pool knows: the
    manager does not hold it (else it ships it), the volunteer's Docker engine did not have
    it when it joined, and its owner does not allow pulls. A volunteer without Docker runs
    no images (its runtime is checked apart)."""
    resources = volunteer.resources
    if task.image_from_manager or not resources.docker_available or volunteer.limits.allow_pull:
        return None
    if with_tag(task.image) in resources.images:
        return None
    return Shortfall(
        "image", f"image {task.image} is not there, nor on the manager, and pulls are not allowed"
    )


def unschedulable(
    proposed: Sequence[ProposedTask], volunteers: Sequence[Volunteer]
) -> list[SplitterError]:
    """A problem per key for tasks no online volunteer can hold; none when no volunteer is
    online (the pool may still be gathering: the coordinator reports such tasks then)."""
    # A blocklisted volunteer is offered nothing: it can hold nothing either.
    online = [v for v in volunteers if v.state is VolunteerState.ONLINE and not v.trust.blocklisted]
    if not online:
        return []
    problems: dict[str, SplitterError] = {}
    for task in proposed:
        shortfalls = [
            capacity_problem(task.spec, v.resources, v.limits) or image_shortfall(task.spec, v)
            for v in online
        ]
        found = [shortfall for shortfall in shortfalls if shortfall is not None]
        able = [v for v, shortfall in zip(online, shortfalls, strict=True) if shortfall is None]
        if able and task.distinct > 1:
            # Copies go to distinct volunteers and distinct owners (the scheduler's rule).
            apart = len({v.owner or v.volunteer_id for v in able})
            if apart < task.distinct and task.distinct_key not in problems:
                problems[task.distinct_key] = SplitterError(
                    task.distinct_key,
                    f"task {task.name} is unschedulable: its {task.distinct} agreeing copies "
                    f"need {task.distinct} distinct volunteers (of distinct owners), and "
                    f"{apart} of the {len(online)} online can run it; add volunteers, or "
                    'set validation = "adaptive" (copies only where a volunteer is not '
                    'trusted) or "none"',
                )
            continue
        if able:
            continue  # some volunteer can run it
        key = _key(task, found[0])
        distinct = sorted({shortfall.message for shortfall in found})
        reason = "; ".join(distinct[:3]) + ("; ..." if len(distinct) > 3 else "")
        if all(shortfall.resource == "runtime" for shortfall in found):
            reason += "; a volunteer needs a Docker engine, or its owner's --allow-process-runtime"
        if any(shortfall.resource == "image" for shortfall in found):
            reason += f"; {IMAGE_HINT}"
        if key.endswith("inputs"):
            reason += f"; its inputs take {inputs_mb(task.spec)} MiB"
        if key not in problems:
            problems[key] = SplitterError(
                key,
                f"task {task.name} is unschedulable: none of the {len(online)} online"
                f" volunteers can run it ({reason})",
            )
    return list(problems.values())
