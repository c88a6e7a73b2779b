"""Why a queued task is not running: each online volunteer's reason, grouped, as HTCondor's
`condor_q -better-analyze` and Nomad's placement failures say it.

The reasons come from the rules the pool itself applies, in the order it applies them: the
coordinator's trust (a blocklisted volunteer gets nothing), the capacity rule the scheduler
and the volunteers share (daemon/capacity.py), the images a volunteer can get, its owner's
allow-lists of managers and images, copies kept apart, then what the volunteer said (its last
decline) and whether it has a free slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from daemon.capacity import capacity_problem, coordinator_allow_problem, task_slots
from daemon.models import ReasonGroup, TaskSpec, Volunteer, VolunteerState
from manager_node.admission import image_shortfall


def why_waiting(
    spec: TaskSpec, volunteers: Sequence[Volunteer], declined: Mapping[str, str]
) -> list[ReasonGroup]:
    """Each volunteer's reason for not running the queued task `spec`, grouped by reason,
    most volunteers first; `declined` holds the last decline reason of each volunteer that
    declined it."""
    groups: dict[str, list[str]] = {}
    for volunteer in volunteers:
        groups.setdefault(_reason(spec, volunteer, declined), []).append(volunteer.volunteer_id)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [ReasonGroup(reason, tuple(sorted(ids))) for reason, ids in ranked]


def _reason(spec: TaskSpec, volunteer: Volunteer, declined: Mapping[str, str]) -> str:
    vid = volunteer.volunteer_id
    if volunteer.state is not VolunteerState.ONLINE:
        return f"{volunteer.state.value}: not connected"
    if volunteer.trust.blocklisted:
        return "blocklisted: its results disagreed with other volunteers'"
    if volunteer.load.unavailable:
        return f"takes no tasks now: {volunteer.load.unavailable}"
    shortfall = capacity_problem(spec, volunteer.resources, volunteer.limits)
    shortfall = shortfall or image_shortfall(spec, volunteer)
    if shortfall is None:
        # The owner's allow-lists, as the coordinator applies them.
        limits = volunteer.limits
        if not spec.manager_id:
            limits = replace(limits, allow_managers=())
        shortfall = coordinator_allow_problem(spec, limits, spec.manager_id)
    if shortfall is not None:
        return shortfall.message
    if not spec.manager_id and volunteer.limits.allow_managers:
        # A manager's own spec does not name it: the list is shown for the reader to check
        # (the coordinator's verdict is the task's message).
        return "takes tasks only from managers " + _listed(volunteer.limits.allow_managers)
    if vid in spec.avoid_volunteers:
        return "ran another copy of this task (copies run on distinct volunteers)"
    if vid in declined:
        return f"declined it: {declined[vid]}"
    slots = task_slots(volunteer.limits)
    held = volunteer.load.running_tasks
    if held >= slots:
        return f"busy until a slot frees (holds {held} tasks, runs {slots} at once)"
    return "free: the coordinator offers it at its next dispatch"


def _listed(names: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def why_fetching(volunteer_id: str) -> list[ReasonGroup]:
    """Why a task its volunteer accepted is not running yet."""
    reason = (
        "holds it: fetching its inputs (and image), or waiting there for a free slot (or "
        "room within its owner's caps)"
    )
    return [ReasonGroup(reason, (volunteer_id,))]
