"""The volunteer's own yes or no to an offer, with the reason people will read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from daemon.models import OwnerLimits, ResourceRequest, Resources, TaskSpec
from volunteer_node.policy import Situation, decline_reason

TASK = TaskSpec(
    task_id="t",
    workflow_id="wf",
    image="vcnode/worker:1",
    command=("true",),
    resources=ResourceRequest(cpus=1, memory_mb=512),
    timeout_seconds=60,
)
HERE = Situation(
    resources=Resources(cpu_cores=4, memory_mb=8192, disk_free_mb=50_000, docker_available=True),
    limits=OwnerLimits(max_concurrent_tasks=2),
    running=0,
    runtime="docker",
    image_id="sha256:abc",
)


def test_a_task_that_fits_is_accepted() -> None:
    assert decline_reason(TASK, HERE) is None


@pytest.mark.parametrize(
    ("task", "situation", "reason"),
    [
        (TASK, replace(HERE, running=3), "busy: holding 3 of 3 tasks"),
        (
            replace(TASK, resources=ResourceRequest(memory_mb=1024)),
            replace(HERE, limits=OwnerLimits(max_memory_mb=768)),
            "not enough memory: needs 1024 MiB, may use 768",
        ),
        (
            replace(TASK, resources=ResourceRequest(cpus=8)),
            HERE,
            "not enough CPUs: needs 8, may use 4",
        ),
        (
            replace(TASK, resources=ResourceRequest(gpus=1)),
            HERE,
            "not enough GPUs: needs 1, has 0",
        ),
        (replace(TASK, network=True), HERE, "network not allowed by the owner"),
        (
            TASK,
            replace(HERE, runtime=None),
            "no Docker engine here and the owner does not allow the process runtime",
        ),
        (TASK, replace(HERE, image_id=None), "image vcnode/worker:1 is not on this volunteer"),
        (
            replace(TASK, image_id="sha256:def"),
            HERE,
            "image vcnode/worker:1 here is sha256:abc, the task pins sha256:def",
        ),
    ],
)
def test_each_reason_to_decline(task: TaskSpec, situation: Situation, reason: str) -> None:
    assert decline_reason(task, situation) == reason


def test_network_is_fine_when_the_owner_allows_it() -> None:
    allowed = replace(HERE, limits=OwnerLimits(allow_network=True))
    assert decline_reason(replace(TASK, network=True), allowed) is None


def test_process_runtime_needs_no_image() -> None:
    assert decline_reason(TASK, replace(HERE, runtime="process", image_id=None)) is None


def test_a_missing_image_is_fine_when_the_manager_can_export_it() -> None:
    task = replace(TASK, image_id="sha256:def", image_from_manager=True)
    assert decline_reason(task, replace(HERE, image_id=None)) is None
    assert decline_reason(task, HERE) is None, "a different local image is replaced by loading"


def test_a_missing_image_is_fine_when_the_owner_allows_pulls() -> None:
    allowing = replace(HERE, image_id=None, limits=replace(HERE.limits, allow_pull=True))
    assert decline_reason(TASK, allowing) is None
