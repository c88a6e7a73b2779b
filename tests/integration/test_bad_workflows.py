"""Bad workflow files: a clear error naming the key, exit 2, and nothing submitted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from daemon.rpc.v1 import common_pb2, manager_pb2, manager_pb2_grpc
from daemon.transport.channels import open_channel
from tests.integration.harness import NO_DOCKER, Daemon, Daemons, cli_json, run_cli, start_pool
from tests.trust import admin_credential

pytestmark = pytest.mark.integration

CASES = {
    "unknown type": ('[workflow]\ntype = "nope"\n', "workflow.type: unknown workflow type 'nope'"),
    "bad parameter": (
        '[workflow]\ntype = "matrix_multiplication"\n[parameters]\nsize = 64\nblocks = 0\n',
        "blocks: must be at least 1",
    ),
    "mistyped parameter": (
        '[workflow]\ntype = "matrix_multiplication"\n[parameters]\nsize = "big"\n',
        "size:",
    ),
    "cycle": (
        '[workflow]\nname = "c"\n[[tasks]]\nname = "a"\ncommand = ["true"]\ndepends_on = ["b"]\n'
        '[[tasks]]\nname = "b"\ncommand = ["true"]\ndepends_on = ["a"]\n',
        "tasks: dependency cycle: a -> b -> a",
    ),
    "missing input file": (
        '[workflow]\ntype = "matrix_multiplication"\n[parameters]\na = "no.npy"\nb = "no.npy"\n',
        "a: file no.npy not found",
    ),
    "not TOML": ("[workflow\n", "not valid TOML"),
    "split with zero tasks": (
        '[workflow]\ntype = "parameter_sweep"\n[parameters]\ncommand = ["echo", "{x}"]\n'
        "grid = { x = [] }\n",
        "grid: x has no values: a sweep over it has no points",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_workflow_is_refused_with_its_key(case: str, daemons: Daemons, tmp_path: Path) -> None:
    text, message = CASES[case]
    workflow = tmp_path / "bad.toml"
    workflow.write_text(text)
    checked = run_cli("validate", str(workflow))
    assert checked.returncode == 2
    assert message in checked.stderr

    manager = daemons.start(
        "manager", "--role", "coordinator,manager", "--listen", "127.0.0.1:0", "--no-mdns"
    )
    manager.address()
    submitted = run_cli("submit", str(workflow), "--data-dir", str(manager.data_dir))
    assert submitted.returncode == 2, submitted.stderr
    assert message in submitted.stderr
    assert cli_json("workflows", "--data-dir", str(manager.data_dir)) == []


def test_a_parameter_only_the_manager_checks_comes_back_as_bad_input(
    daemons: Daemons, tmp_path: Path
) -> None:
    """The client sends --set values as strings; the manager types them."""
    workflow = tmp_path / "mm.toml"
    workflow.write_text('[workflow]\ntype = "matrix_multiplication"\n[parameters]\nsize = 64\n')
    manager = daemons.start(
        "manager", "--role", "coordinator,manager", "--listen", "127.0.0.1:0", "--no-mdns"
    )
    manager.address()
    submitted = run_cli(
        "submit", str(workflow), "--data-dir", str(manager.data_dir), "--set", "blocks=-3"
    )
    assert submitted.returncode == 2, submitted.stderr
    assert "blocks: must be at least 1" in submitted.stderr
    assert cli_json("workflows", "--data-dir", str(manager.data_dir)) == []


def test_validate_reports_every_problem_at_its_line(tmp_path: Path) -> None:
    workflow = tmp_path / "bad.toml"
    workflow.write_text(
        '[workflow]\ntype = "matrix_multiplication"\n\n[parameters]\n'
        'size = "big"\nblocks = 0\ncolour = "red"\na = "missing.npy"\n'
    )
    checked = run_cli("validate", str(workflow))
    assert checked.returncode == 2
    lines = checked.stderr.splitlines()
    assert lines[0] == "node: error: 4 problems:"
    assert f"  {workflow}:7: colour: unknown parameter" in "\n".join(lines)
    assert f"  {workflow}:5: size: expected an integer" in checked.stderr
    assert f"  {workflow}:6: blocks: must be at least 1" in checked.stderr
    assert f"  {workflow}:8: a: file missing.npy not found" in checked.stderr


def test_a_task_no_volunteer_can_hold_is_refused_as_unschedulable(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(daemons, "--max-memory-mb", "512")

    explicit = tmp_path / "big.toml"
    explicit.write_text(
        '[workflow]\nname = "big"\n[[tasks]]\nname = "small"\ncommand = ["true"]\n'
        '[[tasks]]\nname = "huge"\ncommand = ["true"]\n'
        "[tasks.resources]\nmemory_mb = 4096\n"
    )
    submitted = run_cli("submit", str(explicit), "--data-dir", str(manager.data_dir))
    assert submitted.returncode == 2, submitted.stderr
    assert f"{explicit}:10: tasks[1].resources.memory_mb: task huge is unschedulable" in (
        submitted.stderr
    )
    assert "needs 4096 MiB, may use 512" in submitted.stderr

    split = tmp_path / "mm.toml"
    split.write_text(
        '[workflow]\ntype = "matrix_multiplication"\n[parameters]\nsize = 64\nmemory_mb = 2048\n'
    )
    submitted = run_cli("submit", str(split), "--data-dir", str(manager.data_dir))
    assert submitted.returncode == 2, submitted.stderr
    assert f"{split}:5: memory_mb: task block-0-0 is unschedulable" in submitted.stderr
    assert cli_json("workflows", "--data-dir", str(manager.data_dir)) == []


def refused(manager: Daemon, workflow: Path) -> str:
    """Submits `workflow`, which must be refused as bad input with nothing submitted;
    returns what the CLI said."""
    submitted = run_cli("submit", str(workflow), "--data-dir", str(manager.data_dir))
    assert submitted.returncode == 2, submitted.stderr
    assert cli_json("workflows", "--data-dir", str(manager.data_dir)) == []
    return submitted.stderr


def test_inputs_larger_than_any_volunteer_may_hold_are_refused_at_submit(
    daemons: Daemons, tmp_path: Path
) -> None:
    """Inputs land in the volunteer's cache, capped by --max-disk-mb: a task whose inputs fit
    nowhere used to be offered anyway and fail on fetching them."""
    manager, _ = start_pool(daemons, "--allow-process-runtime", "--max-disk-mb", "2", env=NO_DOCKER)
    (tmp_path / "big.bin").write_bytes(b"x" * (3 * 2**20))
    workflow = tmp_path / "big.toml"
    workflow.write_text(
        '[workflow]\nname = "big"\n[[tasks]]\nname = "a"\ncommand = ["true"]\n'
        'inputs = ["big.bin"]\n'
    )
    refusal = refused(manager, workflow)
    assert f"{workflow}:6: tasks[0].inputs: task a is unschedulable" in refusal
    assert "not enough disk: needs 3 MiB, may use 2; its inputs take 3 MiB" in refusal


@pytest.mark.docker
def test_an_image_nobody_has_or_may_pull_is_refused_at_submit(
    daemons: Daemons, tmp_path: Path
) -> None:
    """It used to be accepted, then declined by every volunteer for ever."""
    manager, _ = start_pool(daemons)
    workflow = tmp_path / "image.toml"
    workflow.write_text(
        '[workflow]\nname = "img"\n[[tasks]]\nname = "a"\nimage = "vcnode-test/no-such-image:1"\n'
        'command = ["true"]\n'
    )
    refusal = refused(manager, workflow)
    assert f"{workflow}:5: tasks[0].image: task a is unschedulable" in refusal
    assert "--allow-pull" in refusal


async def test_an_inline_input_that_does_not_match_its_checksum_is_refused(
    daemons: Daemons,
) -> None:
    manager = daemons.start(
        "manager", "--role", "coordinator,manager", "--listen", "127.0.0.1:0", "--no-mdns"
    )
    workflow = (
        '[workflow]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = ["true"]\ninputs = ["in.txt"]\n'
    )
    claimed = common_pb2.FileRef(name="in.txt", sha256=hashlib.sha256(b"good").hexdigest(), size=4)
    async with open_channel(manager.address(), admin_credential()) as channel:
        stub = manager_pb2_grpc.ManagerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SubmitWorkflow(
                manager_pb2.SubmitWorkflowRequest(
                    workflow_toml=workflow,
                    inline_files=[manager_pb2.InlineFile(ref=claimed, content=b"evil")],
                ),
                timeout=10,
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "in.txt: its content does not match" in (refused.value.details() or "")
    assert cli_json("workflows", "--data-dir", str(manager.data_dir)) == []


def test_a_task_too_large_for_the_coordinator_is_refused_at_submit(
    daemons: Daemons, tmp_path: Path
) -> None:
    """Handed over, it would be refused at the coordinator's edge, and hold up every task
    behind it."""
    manager, _ = start_pool(daemons)
    workflow = tmp_path / "huge.toml"
    word = "x" * 70_000
    workflow.write_text(
        f'[workflow]\nname = "huge"\n\n[[tasks]]\nname = "t"\ncommand = ["{word}"]\n'
    )
    said = refused(manager, workflow)
    assert (
        "task t: too large to hand to the coordinator: TaskSpec.command holds 70,000 characters;"
        " at most 65,536"
    ) in said
