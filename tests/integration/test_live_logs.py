"""`vcnode logs -f` and `--attempt` on real daemons with real sandboxed processes: a running
task's lines reach its follower before it ends, every attempt's log is kept (and freed with
its workflow), and only a task's volunteer pushes its log and only its owner follows it: for
as long as the node's rule lets them, 16 follows at a time."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from daemon.rpc.v1 import manager_pb2
from daemon.transport.channels import open_sync_channel
from daemon.trust.credentials import USER, Credential
from tests.integration.harness import (
    NO_DOCKER,
    Daemon,
    Daemons,
    cli_json,
    node_command,
    run_cli,
    start_pool,
    wait_until,
)
from tests.trust import admin_credential, credential

pytestmark = pytest.mark.integration

CALL_SECONDS = 10.0

# `gate` holds `talk` back until the test lets it go, so the follower starts before `talk`
# does; `talk` says a line, waits for the test, says another.
TALK = r'''
[workflow]
name = "talk"

[[tasks]]
name = "gate"
command = ["sh", "-c", "while [ ! -e /output/go ]; do sleep 0.05; done; rm /output/go"]

[[tasks]]
name = "talk"
depends_on = ["gate"]
command = ["sh", "-c", """echo first; while [ ! -e /output/go ]; do sleep 0.05; done; \
rm /output/go; echo second"""]

[[tasks]]
name = "fail"
depends_on = ["gate"]
command = ["sh", "-c", "echo about to fail; echo broken >&2; exit 3"]
'''

# Fails or not as the test says, in the file it writes into the attempt's /output.
FLAKY = r'''
[workflow]
name = "flaky"
validation = "none"

[[tasks]]
name = "flaky"
retries = 1
command = ["sh", "-c", """while [ ! -e /output/verdict ]; do sleep 0.05; done; \
code=$(cat /output/verdict); rm /output/verdict; echo "attempt says $code"; \
echo "complaint $code" >&2; exit $code"""]
'''

WAIT = r"""
[workflow]
name = "wait"

[[tasks]]
name = "wait"
command = ["sh", "-c", "echo hello; while [ ! -e /output/go ]; do sleep 0.05; done; rm /output/go"]
"""


class Follower:
    """`vcnode logs ... -f` as a child process, its stdout read as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            node_command("logs", *args, "-f"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._out = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := os.read(self.process.stdout.fileno(), 4096):
            with self._lock:
                self._out += chunk

    @property
    def out(self) -> str:
        with self._lock:
            return self._out.decode()

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once it exited by itself within `timeout`."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        return code, self.out, self.process.stderr.read().decode()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def submit(manager: Daemon, tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """Submitted by the admin (the manager's own CLI), or by whoever `env` logs in as."""
    workflow = tmp_path / f"wf-{hashlib.sha256(text.encode()).hexdigest()[:8]}.toml"
    workflow.write_text(text)
    if env is None:
        target = ["--data-dir", str(manager.data_dir)]
    else:
        target = ["--manager", manager.address()]
    submitted = run_cli("submit", str(workflow), *target, "--json", env=env)
    assert submitted.returncode == 0, submitted.stderr
    return str(json.loads(submitted.stdout)["workflow_id"])


def task_state(manager: Daemon, workflow_id: str, name: str) -> str:
    status = cli_json("status", workflow_id, "--data-dir", str(manager.data_dir))
    return str({task["name"]: task for task in status["tasks"]}[name]["state"])


def attempt_dirs(volunteer: Daemon) -> dict[int, Path]:
    """The /output of each attempt the volunteer runs now, by attempt number (see
    volunteer_node.worker.run_id)."""
    found = {}
    for output in (volunteer.data_dir / "tasks").glob("*/output"):
        match = re.search(r"\.(\d+)-[0-9a-f]{10}$", output.parent.name)
        if match:
            found[int(match.group(1))] = output
    return found


def output_of(volunteer: Daemon, task_id: str) -> Path | None:
    """The /output of the running attempt of `task_id` (one attempt at a time here)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", task_id)[:80]
    for output in (volunteer.data_dir / "tasks").glob(f"{readable}.*/output"):
        return output
    return None


def release(volunteer: Daemon, task_id: str, name: str = "go", content: str = "") -> None:
    """Writes the file the task's running attempt waits for."""
    output = wait_until(lambda: output_of(volunteer, task_id), 30, f"{task_id} to start")
    (output / name).write_text(content)


def test_follow_prints_lines_as_the_task_writes_them_and_ends_with_it(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    data = ["--data-dir", str(manager.data_dir)]
    workflow_id = submit(manager, tmp_path, TALK)
    # `talk` waits for `gate`: the follower starts before the task does, and waits for it.
    follower = Follower(workflow_id, "talk", *data)
    try:
        assert task_state(manager, workflow_id, "talk") in ("waiting", "queued")
        release(volunteer, f"{workflow_id}.gate")
        wait_until(lambda: follower.out == "first\n", 60, "the first line to be followed")
        # It came while the task runs, which waits for the test to say its second line.
        assert task_state(manager, workflow_id, "talk") == "running"
        assert follower.process.poll() is None
        release(volunteer, f"{workflow_id}.talk")
        code, out, err = follower.finish(timeout=60)
    finally:
        follower.kill()
    assert (code, out) == (0, "first\nsecond\n"), err
    assert "(talk completed)" in err

    wait_until(
        lambda: cli_json("status", workflow_id, *data)["state"] == "failed",
        60,
        "the workflow to end",
    )
    # An ended task: its stored log, and the exit says how it ended.
    ended = Follower(workflow_id, "talk", *data)
    try:
        assert ended.finish(timeout=30)[:2] == (0, "first\nsecond\n")
    finally:
        ended.kill()
    failed = Follower(workflow_id, "fail", *data)
    try:
        code, out, err = failed.finish(timeout=30)
    finally:
        failed.kill()
    assert (code, out) == (1, "about to fail\n"), err
    assert "(fail failed: exited with code 3: broken)" in err
    stderr = Follower(workflow_id, "fail", "--stderr", *data)
    try:
        assert stderr.finish(timeout=30)[:2] == (1, "broken\n")
    finally:
        stderr.kill()
    nope = run_cli("logs", workflow_id, "nope", "-f", *data)
    assert nope.returncode == 1
    assert f"workflow {workflow_id} has no task 'nope'" in nope.stderr
    several = run_cli("logs", workflow_id, "-f", *data)
    assert several.returncode == 2
    assert f"workflow {workflow_id} has several tasks: name one (gate, talk, fail)" in (
        several.stderr
    )


def test_every_attempt_keeps_its_log_until_the_workflow_is_deleted(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    data = ["--data-dir", str(manager.data_dir)]
    workflow_id = submit(manager, tmp_path, FLAKY)
    [(first, output)] = wait_until(lambda: attempt_dirs(volunteer).items(), 60, "attempt 1")
    (output / "verdict").write_text("3")
    [(second, output)] = wait_until(
        lambda: [item for item in attempt_dirs(volunteer).items() if item[0] != first],
        60,
        "the retry",
    )
    (output / "verdict").write_text("0")
    wait_until(
        lambda: cli_json("status", workflow_id, *data)["state"] == "completed",
        60,
        "the workflow to complete",
    )

    last = run_cli("logs", workflow_id, "flaky", *data)
    assert (last.returncode, last.stdout) == (0, "attempt says 0\n"), last.stderr
    assert f"attempt {second}; --attempt N shows another of {first}, {second}" in last.stderr
    failed = cli_json("logs", workflow_id, "flaky", "--attempt", str(first), *data)
    assert failed["content"] == "attempt says 3\n"
    assert (failed["attempt"], failed["attempts"]) == (first, [first, second])
    assert failed["note"] == f"attempt {first} failed: exited with code 3: complaint 3"
    complaint = run_cli("logs", workflow_id, "flaky", "--attempt", str(first), "--stderr", *data)
    assert complaint.stdout == "complaint 3\n", complaint.stderr
    again = run_cli("logs", workflow_id, "flaky", "--attempt", str(second), *data)
    assert again.stdout == "attempt says 0\n", again.stderr
    # The workflow's only task needs no naming.
    assert run_cli("logs", workflow_id, *data).stdout == "attempt says 0\n"
    missing = run_cli("logs", workflow_id, "flaky", "--attempt", "9", *data)
    assert missing.returncode == 1, missing.stderr
    assert (
        f"flaky has no attempt 9 with a log: the attempts whose logs are kept are {first}, {second}"
    ) in missing.stderr

    blobs = manager.data_dir / "blobs" / "complete"
    logged = [hashlib.sha256(line).hexdigest() for line in (b"attempt says 3\n", b"complaint 3\n")]
    assert all((blobs / sha[:2] / sha).exists() for sha in logged)
    deleted = run_cli("delete", workflow_id, *data)
    assert deleted.returncode == 0, deleted.stderr
    assert not any((blobs / sha[:2] / sha).exists() for sha in logged), "a log outlived it"


def person(root: Path, name: str) -> dict[str, str]:
    """The environment of a CLI whose user logged in as `name`."""
    config_home = root / f"config-{name}"
    credential(["user"], user=name).save(config_home / "vcnode", USER)
    return {"XDG_CONFIG_HOME": str(config_home), "PATH": "/usr/bin:/bin"}


def refused(channel: grpc.Channel, method: str, request: bytes) -> tuple[str, str]:
    """(status name, details) of a call that must fail, whatever its arity."""
    path = f"/vcnode.v1.ManagerService/{method}"
    raw = {"request_serializer": lambda x: x, "response_deserializer": lambda x: x}
    try:
        if method == "FollowTaskLog":
            next(channel.unary_stream(path, **raw)(request, timeout=CALL_SECONDS), None)
        else:
            channel.unary_unary(path, **raw)(request, timeout=CALL_SECONDS)
    except grpc.RpcError as error:
        return error.code().name, error.details() or ""
    raise AssertionError(f"{method} was let through")


def push(task_id: str, attempt: int, *chunks: manager_pb2.LogChunk) -> bytes:
    request = manager_pb2.PushTaskLogRequest(task_id=task_id, attempt=attempt, chunks=chunks)
    return request.SerializeToString()


def test_only_the_running_volunteer_pushes_a_log_and_only_its_owner_follows_it(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    address = manager.address()
    alice, bob = person(tmp_path, "alice"), person(tmp_path, "bob")
    workflow_id = submit(manager, tmp_path, WAIT, env=alice)
    task_id = f"{workflow_id}.wait"
    wait_until(lambda: output_of(volunteer, task_id), 30, "the task to run")
    follow = manager_pb2.FollowTaskLogRequest(
        workflow_id=workflow_id, task="wait", stream="stdout"
    ).SerializeToString()
    line = manager_pb2.LogChunk(stream="stdout", offset=0, data=b"forged\n")

    # Strangers get no further than the handshake.
    with grpc.insecure_channel(address) as stranger:
        assert refused(stranger, "FollowTaskLog", follow)[0] == "UNAVAILABLE"
        assert refused(stranger, "PushTaskLog", push(task_id, 1, line))[0] == "UNAVAILABLE"
    # Bob sees only his own workflows; a person never pushes a log.
    bob_credential = credential(["user"], user="bob")
    with open_sync_channel(address, bob_credential) as channel:
        code, details = refused(channel, "FollowTaskLog", follow)
        assert (code, details.startswith(f"workflow {workflow_id} is not yours (user bob")) == (
            "PERMISSION_DENIED",
            True,
        ), details
        assert refused(channel, "PushTaskLog", push(task_id, 1, line)) == (
            "PERMISSION_DENIED",
            "PushTaskLog is not for user bob (user): it takes a volunteer",
        )
    by_bob = run_cli("logs", workflow_id, "wait", "-f", "--manager", address, env=bob)
    assert by_bob.returncode == 4, by_bob.stderr
    assert f"workflow {workflow_id} is not yours (user bob" in by_bob.stderr
    # A volunteer of the cluster that does not run the task pushes nothing for it, and
    # follows nothing.
    other_id = "other-volunteer-0001"
    with open_sync_channel(address, credential(["volunteer"], node_id=other_id)) as channel:
        assert refused(channel, "PushTaskLog", push(task_id, 1, line)) == (
            "PERMISSION_DENIED",
            f"node {other_id[:12]} (volunteer) does not run attempt 1 of task {task_id!r}: "
            "only the volunteer running a task sends its log",
        )
        code, details = refused(channel, "FollowTaskLog", follow)
        assert (code, details.startswith("FollowTaskLog is not for node")) == (
            "PERMISSION_DENIED",
            True,
        ), details
        # Too much at once is refused at the edge, before anyone looks at whose task it is.
        big = manager_pb2.LogChunk(stream="stdout", offset=0, data=b"x" * (64 * 1024 + 1))
        assert refused(channel, "PushTaskLog", push(task_id, 1, big)) == (
            "INVALID_ARGUMENT",
            "refused: LogChunk.data holds 65,537 bytes; at most 65,536",
        )
        assert refused(channel, "PushTaskLog", push(task_id, 1, line, line, line)) == (
            "INVALID_ARGUMENT",
            "refused: PushTaskLogRequest.chunks holds 3 entries; at most 2",
        )

    # Its owner follows it: the volunteer's own line, none of the forged ones. She comes
    # once the attempt runs, when its volunteer may have been told nobody follows (then it
    # asks again within 30 s): she is told how long live output may take.
    follower = Follower(workflow_id, "wait", "--manager", address, env=alice)
    try:
        wait_until(lambda: follower.out == "hello\n", 60, "the task's line")
        release(volunteer, task_id)
        exit_code, out, err = follower.finish(timeout=60)
    finally:
        follower.kill()
    assert (exit_code, out) == (0, "hello\n"), err
    assert "(live output starts within 32 s: a volunteer asks every 30 s" in err


@pytest.mark.docker
def test_follow_sees_a_container_write_before_it_ends(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, [volunteer] = start_pool(daemons)
    data = ["--data-dir", str(manager.data_dir)]
    workflow_id = submit(
        manager, tmp_path, WAIT.replace("rm /output/go", "rm /output/go; echo bye")
    )
    follower = Follower(workflow_id, *data)
    try:
        wait_until(lambda: follower.out == "hello\n", 120, "the container's first line")
        assert task_state(manager, workflow_id, "wait") == "running"
        release(volunteer, f"{workflow_id}.wait")
        code, out, err = follower.finish(timeout=60)
    finally:
        follower.kill()
    assert (code, out) == (0, "hello\nbye\n"), err


def test_each_copy_of_a_replicated_task_has_its_own_attempts(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(daemons, "--allow-process-runtime", volunteers=2, env=NO_DOCKER)
    data = ["--data-dir", str(manager.data_dir)]
    workflow_id = submit(
        manager,
        tmp_path,
        '[workflow]\nname = "q"\nvalidation = "quorum"\n\n[[tasks]]\nname = "one"\n'
        'command = ["sh", "-c", "echo same > /output/out.txt; echo from a copy"]\n'
        'outputs = ["out.txt"]\n',
    )
    wait_until(
        lambda: cli_json("status", workflow_id, *data)["state"] == "completed",
        60,
        "the workflow to complete",
    )
    [task] = cli_json("status", workflow_id, "--task", "one", *data)["tasks"]
    copies = {copy["number"]: copy for copy in task["copy_details"]}
    assert sorted(copies) == [1, 2]
    for number, copy in copies.items():
        name = "one" if number == 1 else f"one~{number}"
        shown = cli_json("logs", workflow_id, name, "--attempt", str(copy["attempt"]), *data)
        assert (shown["task_id"], shown["name"]) == (copy["task_id"], name)
        assert shown["content"] == "from a copy\n"
        assert shown["attempts"] == [copy["attempt"]]
    # Without --attempt: the result that stands, from the copy it came from.
    standing = cli_json("logs", workflow_id, "one", *data)
    assert standing["task_id"] in {copy["task_id"] for copy in copies.values()}
    no_copy = run_cli("logs", workflow_id, "one~3", *data)
    assert no_copy.returncode == 1
    assert "task one has no copy 3: its copies are 1 to 2" in no_copy.stderr


def follow_call(channel: grpc.Channel, workflow_id: str, task: str) -> Any:
    """A FollowTaskLog stream, read piece by piece (`next`), ended by `cancel`."""
    request = manager_pb2.FollowTaskLogRequest(workflow_id=workflow_id, task=task, stream="stdout")
    follow = channel.unary_stream(
        "/vcnode.v1.ManagerService/FollowTaskLog",
        request_serializer=manager_pb2.FollowTaskLogRequest.SerializeToString,
        response_deserializer=manager_pb2.TaskLogPiece.FromString,
    )
    return follow(request, timeout=FOLLOW_SECONDS)


FOLLOW_SECONDS = 60.0


def test_a_person_revoked_while_following_is_cut_off(daemons: Daemons, tmp_path: Path) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    data = ["--data-dir", str(manager.data_dir)]
    token = cli_json("token", "create", "--role", "user", "--name", "mallory", *data)
    config_home = tmp_path / "mallory"
    mallory = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    login = run_cli("login", token["token"], env=mallory)
    assert login.returncode == 0, login.stderr
    workflow_id = submit(manager, tmp_path, WAIT, env=mallory)
    wait_until(lambda: output_of(volunteer, f"{workflow_id}.wait"), 30, "the task to run")
    saved = Credential.load(config_home / "vcnode", USER)
    assert saved is not None
    with open_sync_channel(manager.address(), saved) as channel:
        follow = follow_call(channel, workflow_id, "wait")
        assert next(follow).WhichOneof("kind") == "attempt"  # she follows it
        revoked = run_cli("token", "revoke", token["token_id"], *data)
        assert revoked.returncode == 0, revoked.stderr
        # The task runs on and says nothing more: her follow ends all the same.
        with pytest.raises(grpc.RpcError) as ended:
            for _ in follow:
                pass
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED, ended.value.details()
    assert "was revoked from this cluster" in (ended.value.details() or "")
    assert task_state(manager, workflow_id, "wait") == "running"


def test_a_person_follows_at_most_16_logs_at_once(daemons: Daemons, tmp_path: Path) -> None:
    manager, [volunteer] = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    address = manager.address()
    workflow_id = submit(manager, tmp_path, WAIT, env=person(tmp_path, "carol"))
    wait_until(lambda: output_of(volunteer, f"{workflow_id}.wait"), 30, "the task to run")
    # Another credential of hers: the cap is the person's, not the certificate's.
    carol = credential(["user"], user="carol")
    with (
        open_sync_channel(address, carol) as channel,
        open_sync_channel(address, admin_credential()) as admin,
    ):
        follows = [follow_call(channel, workflow_id, "wait") for _ in range(16)]
        try:
            for follow in follows:
                assert next(follow).WhichOneof("kind") == "attempt"
            with pytest.raises(grpc.RpcError) as refused:
                next(follow_call(channel, workflow_id, "wait"))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.value.details() == (
                "user carol (user) follows 16 task logs at once already: end one (Ctrl-C its "
                "`vcnode logs -f`) before following another"
            )
            # Her follows hold back nobody else.
            theirs = follow_call(admin, workflow_id, "wait")
            assert next(theirs).WhichOneof("kind") == "attempt"
            theirs.cancel()
            # One of hers ends: she may follow again.
            follows.pop().cancel()

            def admitted() -> Any:
                again = follow_call(channel, workflow_id, "wait")
                try:
                    next(again)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    return None
                return again

            follows.append(wait_until(admitted, 30, "a follow to be admitted again"))
        finally:
            for follow in follows:
                follow.cancel()
