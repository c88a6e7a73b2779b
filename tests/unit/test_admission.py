"""Refusing, before submission, a task no online volunteer could ever hold."""

from __future__ import annotations

from dataclasses import replace

from daemon.models import (
    FileRef,
    OwnerLimits,
    ResourceRequest,
    Resources,
    TaskSpec,
    Volunteer,
    VolunteerState,
)
from manager_node.admission import ProposedTask, unschedulable, with_tag


def spec(
    memory_mb: int = 256,
    cpus: float = 1,
    network: bool = False,
    image: str = "i",
    image_from_manager: bool = True,
) -> TaskSpec:
    return TaskSpec(
        task_id="wf.t",
        workflow_id="wf",
        image=image,
        command=("true",),
        resources=ResourceRequest(cpus=cpus, memory_mb=memory_mb),
        timeout_seconds=1,
        network=network,
        image_from_manager=image_from_manager,
    )


def volunteer(
    memory_mb: int,
    state: VolunteerState = VolunteerState.ONLINE,
    docker: bool = True,
    limits: OwnerLimits | None = None,
    images: tuple[str, ...] = (),
) -> Volunteer:
    return Volunteer(
        volunteer_id=f"v{memory_mb}",
        hostname="h",
        version="1",
        resources=Resources(
            cpu_cores=2,
            memory_mb=memory_mb,
            disk_free_mb=1000,
            docker_available=docker,
            images=images,
        ),
        limits=limits or OwnerLimits(),
        state=state,
        first_seen=0,
        last_seen=0,
    )


def test_a_task_one_online_volunteer_can_hold_passes() -> None:
    task = ProposedTask("t", spec(memory_mb=3000), "tasks[0].resources.")
    assert unschedulable([task], [volunteer(1000), volunteer(4000)]) == []


def test_explicit_tasks_are_refused_on_the_resource_key_they_set() -> None:
    proposed = [
        ProposedTask("big", spec(memory_mb=8000), "tasks[0].resources."),
        ProposedTask("wide", spec(cpus=16), "tasks[1].resources."),
        ProposedTask("online", spec(network=True), "tasks[2].resources."),
    ]
    problems = unschedulable(proposed, [volunteer(4000)])
    assert [p.key for p in problems] == [
        "tasks[0].resources.memory_mb",
        "tasks[1].resources.cpus",
        "tasks[2].network",
    ]
    assert "needs 8000 MiB, may use 4000" in problems[0].message


def test_a_splitter_is_refused_on_its_parameter_or_on_parameters() -> None:
    with_memory = ProposedTask("b", spec(memory_mb=8000), "", frozenset({"memory_mb"}))
    without = ProposedTask("c", spec(cpus=16), "", frozenset({"memory_mb"}))
    keys = [p.key for p in unschedulable([with_memory, without], [volunteer(4000)])]
    assert keys == ["memory_mb", "parameters"]


def test_one_problem_per_key_however_many_tasks_share_it() -> None:
    proposed = [ProposedTask(f"b{i}", spec(memory_mb=8000), "", frozenset()) for i in range(50)]
    assert len(unschedulable(proposed, [volunteer(4000)])) == 1


def test_with_no_volunteer_online_nothing_is_judged() -> None:
    task = ProposedTask("t", spec(memory_mb=8000), "tasks[0].resources.")
    assert unschedulable([task], []) == []
    assert unschedulable([task], [volunteer(100, VolunteerState.LOST)]) == []


def test_a_pool_without_any_runtime_is_refused_naming_the_task_and_the_fix() -> None:
    explicit = ProposedTask("t", spec(), "tasks[3].resources.")
    (problem,) = unschedulable([explicit], [volunteer(4000, docker=False)])
    assert problem.key == "tasks[3]"
    assert "has no Docker engine and does not allow the process runtime" in str(problem)
    assert "--allow-process-runtime" in str(problem)
    split = ProposedTask("block-0", spec(), "", frozenset({"memory_mb"}))
    (problem,) = unschedulable([split], [volunteer(4000, docker=False)])
    assert problem.key == "type"
    opted_in = volunteer(4000, docker=False, limits=OwnerLimits(allow_process_runtime=True))
    assert unschedulable([explicit], [opted_in]) == []


def test_an_image_nobody_holds_or_may_pull_is_refused_naming_the_key_and_the_fixes() -> None:
    missing = spec(image="nosuch/image:1", image_from_manager=False)
    explicit = ProposedTask("a", missing, "tasks[0].resources.")
    (problem,) = unschedulable([explicit], [volunteer(4000), volunteer(8000)])
    assert problem.key == "tasks[0].image"
    assert "image nosuch/image:1 is not there, nor on the manager" in problem.message
    assert "--allow-pull" in problem.message
    assert "manager's host" in problem.message
    split = ProposedTask("p-0", missing, "", frozenset({"image", "memory_mb"}))
    assert [p.key for p in unschedulable([split], [volunteer(4000)])] == ["image"]


def test_an_image_the_manager_ships_a_volunteer_holds_or_may_pull_passes() -> None:
    shipped = ProposedTask("a", spec(image="x", image_from_manager=True), "tasks[0].resources.")
    assert unschedulable([shipped], [volunteer(4000)]) == []
    local = spec(image="busybox", image_from_manager=False)
    held = volunteer(4000, images=("busybox:latest",))
    assert unschedulable([ProposedTask("a", local, "tasks[0].resources.")], [held]) == []
    pulls = volunteer(4000, limits=OwnerLimits(allow_pull=True))
    assert unschedulable([ProposedTask("a", local, "tasks[0].resources.")], [pulls]) == []
    process = volunteer(4000, docker=False, limits=OwnerLimits(allow_process_runtime=True))
    assert unschedulable([ProposedTask("a", local, "tasks[0].resources.")], [process]) == []


def test_image_references_are_compared_as_docker_lists_them() -> None:
    assert with_tag("busybox") == "busybox:latest"
    assert with_tag("registry:5000/team/tool") == "registry:5000/team/tool:latest"
    assert with_tag("registry:5000/team/tool:2") == "registry:5000/team/tool:2"
    assert with_tag("tool@sha256:" + "0" * 64) == "tool@sha256:" + "0" * 64


def test_inputs_that_fit_on_no_volunteer_are_refused_on_the_inputs_key() -> None:
    heavy = replace(
        spec(),
        inputs=(FileRef("data", "a" * 64, 3 * 2**20 + 1),),
        resources=ResourceRequest(disk_mb=4),  # as the manager raises it: inputs rounded up
    )
    small_disk = volunteer(4000, limits=OwnerLimits(max_disk_mb=2))
    (problem,) = unschedulable([ProposedTask("a", heavy, "tasks[0].resources.")], [small_disk])
    assert problem.key == "tasks[0].inputs"
    assert problem.message.endswith(
        "not enough disk: needs 4 MiB, may use 2; its inputs take 4 MiB)"
    )
    asked = replace(heavy, resources=ResourceRequest(disk_mb=10))
    (problem,) = unschedulable([ProposedTask("a", asked, "tasks[0].resources.")], [small_disk])
    assert problem.key == "tasks[0].resources.disk_mb", "the task asked for more than its inputs"
