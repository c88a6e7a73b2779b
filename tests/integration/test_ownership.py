"""What a member may do with the objects of others: users see and act on their own workflows
only; a volunteer gets only what the tasks it holds need, and sends only their outputs."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from daemon.rpc.v1 import manager_pb2, manager_pb2_grpc, transfer_pb2, transfer_pb2_grpc
from daemon.transport.channels import open_channel
from daemon.trust.credentials import NODE, USER, Credential
from tests.integration.harness import NO_DOCKER, Daemons, cli_json, run_cli, start_pool, wait_until
from tests.trust import credential

pytestmark = pytest.mark.integration

# Reads its input, then waits: long enough to be asked about while it runs.
WORKFLOW = """
[workflow]
name = "{name}"

[[tasks]]
name = "wait"
command = ["python3", "-c", "import time; open('/input/in.txt').read(); time.sleep(30)"]
inputs = ["in.txt"]
outputs = ["out.txt"]
"""


def login_as(root: Path, name: str) -> dict[str, str]:
    """The environment of a CLI whose user logged in as `name`."""
    config_home = root / f"config-{name}"
    credential(["user"], user=name).save(config_home / "vcnode", USER)
    return {"XDG_CONFIG_HOME": str(config_home), "PATH": "/usr/bin:/bin"}


def submit_as(env: dict[str, str], manager: str, root: Path, name: str) -> str:
    (root / "in.txt").write_text(f"input of {name}")
    workflow = root / f"{name}.toml"
    workflow.write_text(WORKFLOW.format(name=name))
    submitted = run_cli("submit", str(workflow), "--manager", manager, "--json", env=env)
    assert submitted.returncode == 0, submitted.stderr
    return str(json.loads(submitted.stdout)["workflow_id"])


def test_users_see_and_act_on_their_own_workflows_only(daemons: Daemons, tmp_path: Path) -> None:
    manager, _ = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    address = manager.address()
    alice, bob = login_as(tmp_path, "alice"), login_as(tmp_path, "bob")
    workflow_id = submit_as(alice, address, tmp_path, "alice")

    seen_by_bob = run_cli("workflows", "--manager", address, "--json", env=bob)
    assert seen_by_bob.returncode == 0, seen_by_bob.stderr
    assert json.loads(seen_by_bob.stdout) == []
    for command in (
        ["status", workflow_id],
        ["status", workflow_id, "--why"],
        ["status", workflow_id, "--task", "t"],
        ["logs", workflow_id, "t"],
        ["cancel", workflow_id],
        ["watch", workflow_id],
    ):
        refused = run_cli(*command, "--manager", address, env=bob)
        assert refused.returncode == 4, (command, refused.stdout, refused.stderr)
        assert f"workflow {workflow_id} is not yours (user bob" in refused.stderr, refused.stderr

    [own] = json.loads(run_cli("workflows", "--manager", address, "--json", env=alice).stdout)
    assert (own["workflow_id"], own["owner"]) == (workflow_id, "alice")
    # The admin (here: the CLI of the coordinator's host) sees everyone's, owner shown.
    [listed] = cli_json("workflows", "--data-dir", str(manager.data_dir))
    assert listed["owner"] == "alice"
    assert "tasks" not in listed, "a list carries each workflow's counts, not its tasks"
    assert listed["counts"]["total"] >= 1
    cancelled = run_cli("cancel", workflow_id, "--manager", address, env=alice)
    assert cancelled.returncode == 0, cancelled.stderr


async def test_a_volunteer_gets_only_what_the_tasks_it_holds_need(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    address = manager.address()
    workflow_id = submit_as(login_as(tmp_path, "alice"), address, tmp_path, "alice")

    def running() -> bool:
        status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
        return bool(status["tasks"][0]["state"] == "running")

    wait_until(running, 20, "the task to run")
    [task] = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))["tasks"]
    input_sha = hashlib.sha256(b"input of alice").hexdigest()
    # A member volunteer of the cluster that holds no task of this workflow.
    other = credential(["volunteer"])
    async with open_channel(address, other) as channel:
        transfer = transfer_pb2_grpc.TransferServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as download:
            await transfer.Download(transfer_pb2.DownloadRequest(sha256=input_sha)).read()
        forged = b"made up"
        header = transfer_pb2.UploadHeader(
            sha256=hashlib.sha256(forged).hexdigest(),
            size=len(forged),
            purpose=f"{task['task_id']}:1",
        )
        with pytest.raises(grpc.aio.AioRpcError) as upload:
            await transfer.Upload(iter([transfer_pb2.UploadMessage(header=header)]))
        images = manager_pb2_grpc.ManagerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as image:
            await images.GetImageArchive(
                manager_pb2.GetImageArchiveRequest(image="vcnode/worker:1", image_id="sha256:x")
            )
    assert download.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"does not serve blob {input_sha} to you" in str(download.value.details())
    assert upload.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not accept blob" in str(upload.value.details())
    assert image.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "only to volunteers holding a task that runs in it" in str(image.value.details())
    # The volunteer that holds the task fetched the same input: the refusal was about who.
    assert volunteer.node_id == task["volunteer_id"]


SIZED = """
[workflow]
name = "sized"

[[tasks]]
name = "wait"
command = ["python3", "-c", "import time; time.sleep(30)"]
outputs = ["out.bin"]
resources = { disk_mb = 1 }
"""


async def test_the_holder_sends_only_its_running_attempts_outputs_within_its_disk(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    address = manager.address()
    (tmp_path / "sized.toml").write_text(SIZED)
    submitted = run_cli("submit", str(tmp_path / "sized.toml"), "--manager", address, "--json")
    assert submitted.returncode == 0, submitted.stderr
    workflow_id = json.loads(submitted.stdout)["workflow_id"]

    def running() -> dict[str, object] | None:
        [task] = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))["tasks"]
        return task if task["state"] == "running" else None

    task = wait_until(running, 20, "the task to run")
    # The volunteer's own credential: what it may send, as the manager sees it.
    holder = Credential.load(volunteer.data_dir / "tls", NODE)
    assert holder is not None
    purpose = f"{task['task_id']}:{task['attempts']}"
    first, second = os.urandom(700 * 1024), os.urandom(700 * 1024)
    async with open_channel(address, holder) as channel:
        transfer = transfer_pb2_grpc.TransferServiceStub(channel)
        reply = await transfer.Upload(upload_messages(first, purpose))
        assert reply.size == len(first), "the first output fits its 1 MiB"
        for blob, wrong in ((second, purpose), (first, f"{task['task_id']}:99")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await transfer.Upload(upload_messages(blob, wrong))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, wrong
    run_cli("cancel", workflow_id, "--manager", address)


def upload_messages(blob: bytes, purpose: str) -> Iterator[transfer_pb2.UploadMessage]:
    sha256 = hashlib.sha256(blob).hexdigest()
    header = transfer_pb2.UploadHeader(sha256=sha256, size=len(blob), purpose=purpose)
    yield transfer_pb2.UploadMessage(header=header)
    yield transfer_pb2.UploadMessage(
        chunk=transfer_pb2.Chunk(offset=0, data=blob, crc32=zlib.crc32(blob))
    )
