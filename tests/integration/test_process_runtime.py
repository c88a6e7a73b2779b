"""The process runtime (for hosts without Docker) with real sandboxed subprocesses: a task
runs as nobody, sees its own files and nothing else of the host, and reaches no network
unless it asks for one."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.runtime.process import (
    TASK_UIDS,
    ProcessRuntime,
    sandbox_command,
    scratch_dir,
    unavailable,
)
from daemon.runtime.spec import LOG_BYTES, RunSpec

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def sandbox_here() -> None:
    problem = unavailable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but tasks cannot be sandboxed here: {problem}")
        pytest.skip(problem)


def make_spec(tmp_path: Path, *command: str, **overrides: object) -> RunSpec:
    (tmp_path / "input").mkdir(parents=True, exist_ok=True)
    (tmp_path / "output").mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "run_id": f"test-{uuid.uuid4().hex[:12]}",
        "image": "ignored",
        "command": command,
        "input_dir": tmp_path / "input",
        "output_dir": tmp_path / "output",
        "cpus": 1.0,
        "memory_mb": 256,
        "timeout_seconds": 30.0,
    }
    fields.update(overrides)
    return RunSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def listener() -> Iterator[int]:
    """A port on this host's loopback that accepts connections."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


REACH = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2).close()\n"
    "    print('reached')\n"
    "except OSError as error:\n"
    "    print('unreachable:', error)\n"
)


async def test_a_task_runs_as_a_uid_of_its_own_with_its_files(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        "sh", "-c",
        'id -u; pwd; tr a-z A-Z < "$VCNODE_INPUT/in.txt" > /output/out.txt;'
        ' echo 70 > "$VCNODE_OUTPUT/.progress"; sleep 0.6',
    )  # fmt: skip
    (spec.input_dir / "in.txt").write_text("hello")
    progress: list[float] = []
    result = await ProcessRuntime().run(spec, progress.append)
    assert result.succeeded, result
    uid, cwd = result.stdout_tail.split()
    assert int(uid) in TASK_UIDS
    assert cwd == "/tmp"
    assert (spec.output_dir / "out.txt").read_text().strip() == "HELLO"
    assert 70.0 in progress


async def test_the_host_is_out_of_a_tasks_sight_and_reach(tmp_path: Path, listener: int) -> None:
    secret_home = Path.home()
    data_dir = tmp_path  # the volunteer's task dirs live here on the host
    probe = (
        f"for path in /etc/shadow /etc/passwd /root {secret_home} {data_dir}; do"
        ' if [ -e "$path" ]; then echo "visible $path"; fi; done;'
        " touch /usr/bin/x 2>/dev/null && echo 'wrote /usr';"
        " touch /input/x 2>/dev/null && echo 'wrote /input';"
        f' python3 -c "$0" {listener}'
    )
    result = await ProcessRuntime().run(make_spec(tmp_path, "sh", "-c", probe, REACH), print)
    assert result.succeeded, result
    # Its loopback is its own: the host's listener is not there.
    [line] = result.stdout_tail.splitlines()  # else it saw or touched something of the host
    assert line.startswith("unreachable:"), line


async def test_a_task_that_asks_for_network_and_may_have_it_reaches_the_host(
    tmp_path: Path, listener: int
) -> None:
    spec = make_spec(tmp_path, "python3", "-c", REACH, str(listener), network=True)
    result = await ProcessRuntime().run(spec, print)
    assert result.succeeded, result
    assert result.stdout_tail.strip() == "reached"


async def test_non_zero_exit_and_timeout(tmp_path: Path) -> None:
    runtime = ProcessRuntime()
    failed = await runtime.run(make_spec(tmp_path, "sh", "-c", "exit 4"), lambda _: None)
    assert failed.failure == "exited with code 4"
    timed_out = await runtime.run(
        make_spec(tmp_path, "sh", "-c", "sleep 60", timeout_seconds=0.5), lambda _: None
    )
    assert timed_out.failure == "timed out after 0.5 s (killed)"


async def test_memory_limit_applies(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "python3", "-c", "x = bytearray(2 * 1024**3)", memory_mb=64)
    result = await ProcessRuntime().run(spec, lambda _: None)
    assert result.failure == "out of memory: needed more than its 64 MiB limit"


def test_the_sandbox_drops_privileges_after_bwrap_and_shares_no_network_by_default(
    tmp_path: Path,
) -> None:
    command = sandbox_command(make_spec(tmp_path, "true"), uid=TASK_UIDS[0])
    assert command.index("bwrap") < command.index("setpriv") < command.index("true")
    assert "--unshare-net" in command
    assert {f"--reuid={TASK_UIDS[0]}", "--no-new-privs", "--bounding-set=-all"} <= set(command)
    with_network = sandbox_command(make_spec(tmp_path, "true", network=True), uid=TASK_UIDS[0])
    assert "--unshare-net" not in with_network


async def test_tasks_running_at_once_have_uids_of_their_own(tmp_path: Path) -> None:
    """The process limit counts per uid: shared, one task's fork bomb would starve others."""
    runtime = ProcessRuntime()
    specs = [make_spec(tmp_path / str(i), "sh", "-c", "sleep 0.5; id -u") for i in range(3)]
    results = await asyncio.gather(*(runtime.run(spec, lambda _: None) for spec in specs))
    uids = {int(result.stdout_tail) for result in results}
    assert len(uids) == 3
    assert uids <= set(TASK_UIDS)


async def test_a_task_writing_past_its_output_cap_is_stopped_and_says_why(tmp_path: Path) -> None:
    writer = "while true; do head -c 1048576 /dev/zero >> /output/big; sleep 0.01; done"
    spec = make_spec(tmp_path, "sh", "-c", writer, output_mb=2)
    result = await ProcessRuntime().run(spec, lambda _: None)
    assert result.failure.startswith("wrote more than its 2 MiB of output and /tmp ("), result
    assert result.failure.endswith("MiB; stopped)")


async def test_a_task_that_writes_past_its_cap_and_exits_at_once_is_caught_after(
    tmp_path: Path,
) -> None:
    spec = make_spec(tmp_path, "sh", "-c", "truncate -s 50M /output/sparse", output_mb=2)
    result = await ProcessRuntime().run(spec, lambda _: None)
    assert result.failure == "wrote more than its 2 MiB of output and /tmp (50 MiB; stopped)"


async def test_a_tasks_tmp_is_on_disk_counted_with_its_output_and_gone_after(
    tmp_path: Path,
) -> None:
    """A tmpfs /tmp would fill the host's memory, which no cgroup bounds here."""
    writer = "while true; do head -c 1048576 /dev/zero >> /tmp/big; sleep 0.01; done"
    spec = make_spec(tmp_path, "sh", "-c", writer, output_mb=2)
    result = await ProcessRuntime().run(spec, lambda _: None)
    assert result.failure.startswith("wrote more than its 2 MiB of output and /tmp ("), result
    assert not scratch_dir(spec).exists(), "the task's /tmp is removed after it"
    assert list((tmp_path / "output").iterdir()) == []


async def test_a_task_writing_without_end_keeps_the_last_8_mib_and_says_its_error_line(
    tmp_path: Path,
) -> None:
    runtime = ProcessRuntime()
    # 20 MiB on stdout, then a numbered end; stderr names its cause on line 2 of many.
    script = (
        "head -c 20971520 /dev/zero | tr '\\0' x; echo; echo THE-END; "
        "echo starting >&2; echo 'Error: unable to open /om/scenario.xsd' >&2; "
        "seq 1 400 >&2; exit 67"
    )
    result = await runtime.run(make_spec(tmp_path, "sh", "-c", script), lambda _: None)
    assert result.failure == "exited with code 67: Error: unable to open /om/scenario.xsd"
    assert len(result.stdout) == LOG_BYTES
    assert result.stdout_cut
    assert result.stdout.endswith(b"THE-END\n")
    assert not result.stderr_cut
    assert result.stderr.splitlines()[1] == b"Error: unable to open /om/scenario.xsd"
    assert result.stderr.splitlines()[-1] == b"400"
