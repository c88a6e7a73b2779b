"""The volunteer owner's allow-lists through real daemons (process runtime): images outside
`--allow-images` and managers outside `--allow-managers` never run there, and say why."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from daemon.models import ResourceRequest, TaskSpec
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.transport import convert
from daemon.transport.channels import open_sync_channel
from daemon.trust.credentials import USER
from tests.integration.harness import (
    NO_DOCKER,
    Daemon,
    Daemons,
    cli_json,
    list_volunteers,
    run_cli,
    start_pool,
    unique_cluster,
    wait_until,
    why_waiting,
)
from tests.trust import credential

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "c" * 64


def workflow(tmp_path: Path, name: str, images: dict[str, str]) -> Path:
    """One task per image, each writing its name; the process runtime ignores the image
    but the allow-list does not."""
    tasks = "".join(
        f'\n[[tasks]]\nname = "{task}"\nimage = "{image}"\noutputs = ["o"]\n'
        f"command = [\"python3\", \"-c\", \"open('/output/o', 'w').write('{task}')\"]\n"
        for task, image in images.items()
    )
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[workflow]\nname = "{name}"\nvalidation = "none"\n{tasks}')
    return path


def tasks_of(manager: Daemon, workflow_id: str) -> dict[str, dict[str, Any]]:
    status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
    return {task["name"]: task for task in status["tasks"]}


def submit(manager: Daemon, path: Path) -> str:
    submitted = run_cli("submit", str(path), "--data-dir", str(manager.data_dir), "--json")
    assert submitted.returncode == 0, submitted.stderr
    return str(json.loads(submitted.stdout)["workflow_id"])


def test_a_volunteer_runs_only_the_images_it_allows(daemons: Daemons, tmp_path: Path) -> None:
    common = ["--listen", "127.0.0.1:0", "--cluster", unique_cluster(), "--heartbeat", "0.5"]
    manager = daemons.start("manager", "--role", "coordinator,manager", *common)
    address = manager.address()
    runtime = ["--role", "volunteer", "--allow-process-runtime", *common]
    only_x = daemons.start("only-x", *runtime, "--allow-images", "vcnode/x:*", env=NO_DOCKER)
    # Only an image ID: the coordinator cannot tell (it knows no volunteer's images), so it
    # offers; the volunteer, which holds no image under that name to check, declines.
    by_id = daemons.start("by-id", *runtime, "--allow-images", DIGEST, env=NO_DOCKER)
    ids = {only_x.address() and only_x.node_id, by_id.address() and by_id.node_id}
    wait_until(lambda: ids <= set(list_volunteers(address)), 20, "the volunteers")
    assert list(list_volunteers(address)[only_x.node_id].limits.allow_images) == ["vcnode/x:*"]

    workflow_id = submit(
        manager, workflow(tmp_path, "images", {"y": "vcnode/y:1", "x": "vcnode/x:1"})
    )
    wait_until(
        lambda: tasks_of(manager, workflow_id)["x"]["state"] == "completed", 60, "x to complete"
    )

    def declined() -> dict[str, list[str]] | None:
        reasons = why_waiting(manager, workflow_id, "y")
        return reasons if any(r.startswith("declined it") for r in reasons) else None

    reasons = wait_until(declined, 30, "the digest-only volunteer to decline y")
    assert tasks_of(manager, workflow_id)["y"]["state"] == "queued"
    assert tasks_of(manager, workflow_id)["x"]["volunteer_id"] == only_x.node_id
    assert reasons == {
        "image vcnode/y:1 is not in this volunteer's allow_images": [only_x.node_id],
        "declined it: image vcnode/y:1 is not in this volunteer's allow_images": [by_id.node_id],
    }
    # The volunteer said no itself, and the one with patterns was never asked.
    assert "vcnode/y:1 is not in this volunteer's allow_images" in by_id.log
    assert f"{workflow_id}.y" not in only_x.log
    assert run_cli("cancel", workflow_id, "--data-dir", str(manager.data_dir)).returncode == 0


def test_a_volunteer_runs_only_its_allowed_managers_tasks(daemons: Daemons, tmp_path: Path) -> None:
    common = ["--cluster", unique_cluster(), "--heartbeat", "0.5", "--no-mdns"]
    loopback = ["--listen", "127.0.0.1:0"]
    coordinator = daemons.start("coordinator", "--role", "coordinator", *loopback, *common)
    address = coordinator.address()
    managers = [
        daemons.start(name, "--role", "manager", "--coordinator", address, *loopback, *common)
        for name in ("allowed", "other")
    ]
    allowed, other = managers
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--allow-process-runtime", "--coordinator", address,
        "--allow-managers", allowed.node_id, *loopback, *common, env=NO_DOCKER,
    )  # fmt: skip
    for manager in managers:
        manager.address()
    vid = volunteer.address() and volunteer.node_id
    wait_until(lambda: vid in list_volunteers(address), 20, "the volunteer")

    # The other manager's task first: were it offered, FIFO would offer it first.
    other_id = submit(other, workflow(tmp_path, "theirs", {"t": "vcnode/worker:1"}))
    ours_id = submit(allowed, workflow(tmp_path, "ours", {"t": "vcnode/worker:1"}))
    wait_until(
        lambda: tasks_of(allowed, ours_id)["t"]["state"] == "completed", 60, "ours to complete"
    )
    assert tasks_of(other, other_id)["t"]["state"] == "queued"
    explained = cli_json("status", other_id, "--why", "t", "--data-dir", str(other.data_dir))
    [theirs] = explained["tasks"]
    # The coordinator's word, and the volunteer's list for the reader to check.
    assert (
        f"{vid[:8]}: manager {other.node_id} is not in this volunteer's allow_managers"
        in (theirs["message"])
    )
    assert theirs["groups"] == [
        {"reason": f"takes tasks only from managers {allowed.node_id}", "volunteer_ids": [vid]}
    ]
    assert other_id not in volunteer.log
    assert run_cli("cancel", other_id, "--data-dir", str(other.data_dir)).returncode == 0


def test_a_manager_cannot_pass_for_an_allowed_manager_in_its_tasks(
    daemons: Daemons, tmp_path: Path
) -> None:
    """An impostor manager names the allowed manager in its tasks' specs, or in its call:
    the coordinator goes by its certificate, so the volunteer is never offered them."""
    common = ["--listen", "127.0.0.1:0", "--cluster", unique_cluster(), "--heartbeat", "0.5"]
    allowed = daemons.start("manager", "--role", "coordinator,manager", *common)
    address = allowed.address()
    volunteer = daemons.start(
        "volunteer", "--role", "volunteer", "--allow-process-runtime",
        "--allow-managers", allowed.node_id, *common, env=NO_DOCKER,
    )  # fmt: skip
    vid = volunteer.address() and volunteer.node_id
    wait_until(lambda: vid in list_volunteers(address), 20, "the volunteer")

    impostor = f"impostor-{uuid.uuid4().hex[:12]}"
    spec = TaskSpec(
        "hijack.t", "hijack", "vcnode/worker:1", ("true",), ResourceRequest(), 60,
        manager_id=allowed.node_id,
    )  # fmt: skip
    with open_sync_channel(address, credential(["manager"], node_id=impostor)) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        # In the call: refused outright.
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitTasks(
                coordinator_pb2.SubmitTasksRequest(
                    manager_id=allowed.node_id,
                    manager_address="127.0.0.1:9",
                    tasks=[convert.task_spec_to_proto(spec)],
                ),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # In the spec: taken as the impostor's own task, which the volunteer does not allow.
        reply = stub.SubmitTasks(
            coordinator_pb2.SubmitTasksRequest(
                manager_id=impostor,
                manager_address="127.0.0.1:9",
                tasks=[convert.task_spec_to_proto(spec)],
            ),
            timeout=10,
        )
        assert reply.accepted == 1
        events = stub.WatchTasks(
            coordinator_pb2.WatchTasksRequest(manager_id=impostor, workflow_id="hijack"),
            timeout=30,
        )
        kinds = []
        for event in events:
            kinds.append(event.kind)
            if event.kind == "unschedulable":
                assert f"manager {impostor} is not in this volunteer's allow_managers" in (
                    event.message
                )
                events.cancel()
                break
    assert "offered" not in kinds
    assert "hijack" not in volunteer.log


def test_a_volunteer_runs_only_the_workflows_of_the_users_it_allows(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, [volunteer] = start_pool(
        daemons, "--allow-process-runtime", "--allow-users", "alice", env=NO_DOCKER
    )
    address = manager.address()

    def submit_as(name: str) -> str:
        config_home = tmp_path / f"config-{name}"
        credential(["user"], user=name).save(config_home / "vcnode", USER)
        path = workflow(tmp_path, name, {"t": "vcnode/worker:1"})
        env = {"XDG_CONFIG_HOME": str(config_home), "PATH": "/usr/bin:/bin"}
        submitted = run_cli("submit", str(path), "--manager", address, "--json", env=env)
        assert submitted.returncode == 0, submitted.stderr
        return str(json.loads(submitted.stdout)["workflow_id"])

    # Bob's first: were it offered, FIFO would offer it first.
    bobs, alices = submit_as("bob"), submit_as("alice")
    wait_until(
        lambda: tasks_of(manager, alices)["t"]["state"] == "completed", 60, "alice's to complete"
    )
    assert tasks_of(manager, bobs)["t"]["state"] == "queued"
    assert why_waiting(manager, bobs, "t") == {
        "user bob is not in this volunteer's allow_users": [volunteer.node_id]
    }
    assert bobs not in volunteer.log
    assert run_cli("cancel", bobs, "--data-dir", str(manager.data_dir)).returncode == 0
