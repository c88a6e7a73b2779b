"""What a peer may send: every string and list of a request capped, a few fields tighter."""

from __future__ import annotations

from daemon.models import FileRef, OwnerLimits, Registration, ResourceRequest, Resources, TaskSpec
from daemon.rpc.v1 import coordinator_pb2, manager_pb2
from daemon.transport import convert
from daemon.transport.caps import INLINE_FILE_BYTES, excess


def register(**changes: object) -> coordinator_pb2.Register:
    fields: dict[str, object] = {
        "volunteer_id": "a" * 32,
        "hostname": "lab-7",
        "cluster": "lab",
        "protocol_version": 1,
        "version": "0.1.0",
        "resources": Resources(4, 8192, 100_000, images=("vcnode/worker:1",)),
        "limits": OwnerLimits(),
    }
    fields.update(changes)
    return convert.registration_to_proto(Registration(**fields))  # type: ignore[arg-type]


def task(index: int, command: tuple[str, ...] = ("true",)) -> TaskSpec:
    return TaskSpec(f"wf.t{index}", "wf", "vcnode/worker:1", command, ResourceRequest(), 60)


def test_what_honest_peers_send_passes() -> None:
    assert excess(register()) is None
    batch = coordinator_pb2.SubmitTasksRequest(
        manager_id="m", tasks=[convert.task_spec_to_proto(task(i)) for i in range(500)]
    )
    assert excess(batch) is None


def test_a_huge_host_name_is_refused_naming_the_field() -> None:
    assert excess(register(hostname="h" * 9 * 2**20)) == (
        "Register.hostname holds 9,437,184 characters; at most 255"
    )


def test_a_long_list_and_an_item_inside_a_list_are_capped() -> None:
    images = tuple(f"image-{i}" for i in range(1_001))
    many = register(resources=Resources(4, 8192, 100_000, images=images))
    assert excess(many) == "Resources.images holds 1,001 entries; at most 1,000"
    batch = coordinator_pb2.SubmitTasksRequest(
        manager_id="m", tasks=[convert.task_spec_to_proto(task(i)) for i in range(1_001)]
    )
    assert excess(batch) == "SubmitTasksRequest.tasks holds 1,001 entries; at most 1,000"
    word = coordinator_pb2.SubmitTasksRequest(
        manager_id="m", tasks=[convert.task_spec_to_proto(task(0, ("x" * 70_000,)))]
    )
    assert excess(word) == "TaskSpec.command holds 70,000 characters; at most 65,536"


def test_map_keys_and_values_are_capped() -> None:
    overrides = {f"k{i}": "v" for i in range(1_001)}
    request = manager_pb2.SubmitWorkflowRequest(workflow_toml="x", overrides=overrides)
    assert excess(request) == "SubmitWorkflowRequest.overrides holds 1,001 entries; at most 1,000"
    long_value = manager_pb2.SubmitWorkflowRequest(overrides={"k": "v" * 70_000})
    assert excess(long_value) == (
        "SubmitWorkflowRequest.overrides holds 70,000 characters; at most 65,536"
    )


def test_what_the_cli_sends_inline_at_its_limits_passes() -> None:
    ref = convert.file_ref_to_proto(FileRef("data.bin", "0" * 64, INLINE_FILE_BYTES))
    largest = manager_pb2.InlineFile(ref=ref, content=b"x" * INLINE_FILE_BYTES)
    request = manager_pb2.SubmitWorkflowRequest(workflow_toml="x", inline_files=[largest])
    assert excess(request) is None
    small = manager_pb2.InlineFile(ref=ref, content=b"x")
    folder = manager_pb2.SubmitWorkflowRequest(workflow_toml="x", inline_files=[small] * 20_000)
    assert excess(folder) is None
