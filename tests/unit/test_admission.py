"""Refusing, before submission, a task no online volunteer could ever hold."""

from __future__ import annotations

from daemon.models import (
    OwnerLimits,
    ResourceRequest,
    Resources,
    TaskSpec,
    Volunteer,
    VolunteerState,
)
from manager_node.admission import Candidate, unschedulable


def spec(memory_mb: int = 256, cpus: float = 1, network: bool = False) -> TaskSpec:
    return TaskSpec(
        task_id="wf.t",
        workflow_id="wf",
        image="i",
        command=("true",),
        resources=ResourceRequest(cpus=cpus, memory_mb=memory_mb),
        timeout_seconds=1,
        network=network,
    )


def volunteer(
    memory_mb: int,
    state: VolunteerState = VolunteerState.ONLINE,
    docker: bool = True,
    limits: OwnerLimits | None = None,
) -> Volunteer:
    return Volunteer(
        volunteer_id=f"v{memory_mb}",
        hostname="h",
        version="1",
        resources=Resources(
            cpu_cores=2, memory_mb=memory_mb, disk_free_mb=1000, docker_available=docker
        ),
        limits=limits or OwnerLimits(),
        state=state,
        first_seen=0,
        last_seen=0,
    )


def test_a_task_one_online_volunteer_can_hold_passes() -> None:
    candidate = Candidate("t", spec(memory_mb=3000), "tasks[0].resources.")
    assert unschedulable([candidate], [volunteer(1000), volunteer(4000)]) == []


def test_explicit_tasks_are_refused_on_the_resource_key_they_set() -> None:
    candidates = [
        Candidate("big", spec(memory_mb=8000), "tasks[0].resources."),
        Candidate("wide", spec(cpus=16), "tasks[1].resources."),
        Candidate("online", spec(network=True), "tasks[2].resources."),
    ]
    problems = unschedulable(candidates, [volunteer(4000)])
    assert [p.key for p in problems] == [
        "tasks[0].resources.memory_mb",
        "tasks[1].resources.cpus",
        "tasks[2].network",
    ]
    assert "needs 8000 MiB, may use 4000" in problems[0].message


def test_a_splitter_is_refused_on_its_parameter_or_on_parameters() -> None:
    with_memory = Candidate("b", spec(memory_mb=8000), "", frozenset({"memory_mb"}))
    without = Candidate("c", spec(cpus=16), "", frozenset({"memory_mb"}))
    keys = [p.key for p in unschedulable([with_memory, without], [volunteer(4000)])]
    assert keys == ["memory_mb", "parameters"]


def test_one_problem_per_key_however_many_tasks_share_it() -> None:
    candidates = [Candidate(f"b{i}", spec(memory_mb=8000), "", frozenset()) for i in range(50)]
    assert len(unschedulable(candidates, [volunteer(4000)])) == 1


def test_with_no_volunteer_online_nothing_is_judged() -> None:
    candidate = Candidate("t", spec(memory_mb=8000), "tasks[0].resources.")
    assert unschedulable([candidate], []) == []
    assert unschedulable([candidate], [volunteer(100, VolunteerState.LOST)]) == []


def test_a_pool_without_any_runtime_is_refused_naming_the_task_and_the_fix() -> None:
    explicit = Candidate("t", spec(), "tasks[3].resources.")
    (problem,) = unschedulable([explicit], [volunteer(4000, docker=False)])
    assert problem.key == "tasks[3]"
    assert "has no Docker engine and does not allow the process runtime" in str(problem)
    assert "--allow-process-runtime" in str(problem)
    split = Candidate("block-0", spec(), "", frozenset({"memory_mb"}))
    (problem,) = unschedulable([split], [volunteer(4000, docker=False)])
    assert problem.key == "type"
    opted_in = volunteer(4000, docker=False, limits=OwnerLimits(allow_process_runtime=True))
    assert unschedulable([explicit], [opted_in]) == []
