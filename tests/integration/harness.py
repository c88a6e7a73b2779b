"""Real daemons as real processes, and the real CLI, for integration tests.

Every wait polls for its condition against a deadline; nothing sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tests.trust import admin_credential, provision

if TYPE_CHECKING:
    from daemon.app import Node

T = TypeVar("T")
POLL_SECONDS = 0.05


def wait_until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Polls `condition` until it returns something truthy (None or falsy: not yet), and
    returns that; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_SECONDS)


def unique_cluster() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def node_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def run_cli(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        node_command(*args), capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def cli_json(*args: str) -> Any:
    result = run_cli(*args, "--json")
    assert result.returncode == 0, f"node {' '.join(args)} failed: {result.stderr}"
    return json.loads(result.stdout)


def why_waiting(manager: Daemon, workflow_id: str, task: str) -> dict[str, list[str]]:
    """`vcnode status WF --why TASK` as {reason: volunteer ids}."""
    explained = cli_json("status", workflow_id, "--why", task, "--manager", manager.address())
    [entry] = explained["tasks"]
    return {group["reason"]: group["volunteer_ids"] for group in entry["groups"]}


@dataclass
class Daemon:
    """One `node daemon` child process with its own data dir and log file."""

    data_dir: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Words the command runs through first, e.g. `ip netns exec HOST` for another host.
    prefix: list[str] = field(default_factory=list)
    # False: the daemon finds `data_dir` by itself, as the README says (XDG_DATA_HOME).
    pass_data_dir: bool = True
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")

    def start(self) -> Daemon:
        self.started_at = time.time()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *self.prefix,
                *node_command(
                    "daemon",
                    *(["--data-dir", str(self.data_dir)] if self.pass_data_dir else []),
                    *self.args,
                ),
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        log.close()
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def address(self, timeout: float = 20) -> str:
        """Waits until the daemon serves and returns the address it wrote."""

        def written() -> str | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log}")
            path = self.data_dir / "address"
            try:
                # A killed predecessor's file may linger until this process takes the lock.
                if path.stat().st_mtime < self.started_at:
                    return None
                return path.read_text().strip() or None
            except FileNotFoundError:
                return None

        return wait_until(written, timeout, f"daemon in {self.data_dir} to serve")

    @property
    def node_id(self) -> str:
        return (self.data_dir / "node_id").read_text().strip()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def wait_exit(self, timeout: float = 20) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


def roles_in(args: list[str], env: dict[str, str]) -> list[str]:
    """The roles a daemon is started with, by flag or environment."""
    text = env.get("VCNODE_ROLE") or os.environ.get("VCNODE_ROLE", "")
    for flag, value in itertools.pairwise(args):
        if flag == "--role":
            text = value
    return [role for role in text.split(",") if role]


class Daemons:
    """Starts daemons under one tmp dir and stops whatever is left at the end of a test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Daemon] = []

    def start(
        self,
        name: str,
        *args: str,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        vouched: bool = True,
        owner: str | None = None,
    ) -> Daemon:
        daemon = Daemon(data_dir or self.root / name, list(args), env or {})
        return self.add(daemon, vouched=vouched, owner=owner)

    def add(
        self,
        daemon: Daemon,
        provisioned: bool = True,
        vouched: bool = True,
        owner: str | None = None,
    ) -> Daemon:
        """Starts `daemon`, stopped with the rest at the end of the test. Unless it was given
        a token (or `provisioned` is False), it starts with a certificate of the test
        session's cluster already in its data dir, as if it had joined (a volunteer's
        `vouched` and naming `owner`: see tests.trust.provision)."""
        if provisioned and "--token" not in daemon.args:
            provision(daemon.data_dir, roles_in(daemon.args, daemon.env), vouched, owner)
        self.started.append(daemon.start())
        return daemon

    def start_script(self, name: str, script: Path) -> Daemon:
        """Any other program (e.g. a foreign mDNS announcer), stopped with the rest."""
        daemon = Daemon(self.root / name, [])
        log = daemon.log_path.open("ab")
        daemon.process = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=log)
        log.close()
        self.started.append(daemon)
        return daemon

    def stop_all(self) -> None:
        for daemon in self.started:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait(timeout=10)


# A volunteer with this environment finds no Docker engine.
NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def start_pool(
    daemons: Daemons,
    *volunteer_args: str,
    volunteers: int = 1,
    env: dict[str, str] | None = None,
    heartbeat: str = "0.5",
    manager_args: tuple[str, ...] = (),
) -> tuple[Daemon, list[Daemon]]:
    """A coordinator+manager (with `manager_args`) and `volunteers` volunteers (each with
    `volunteer_args` and `env`) in a cluster of their own on loopback; returns once every
    volunteer joined."""
    common = ["--listen", "127.0.0.1:0", "--cluster", unique_cluster(), "--heartbeat", heartbeat]
    manager = daemons.start("manager", "--role", "coordinator,manager", *common, *manager_args)
    address = manager.address()
    started = [
        daemons.start(f"volunteer-{i}", "--role", "volunteer", *volunteer_args, *common, env=env)
        for i in range(volunteers)
    ]
    ids = {volunteer.address() and volunteer.node_id for volunteer in started}
    wait_until(
        lambda: ids <= {vid for vid, v in list_volunteers(address).items() if v.connected},
        15,
        "volunteers to join",
    )
    return manager, started


@dataclass(frozen=True)
class SplitPool:
    """A coordinator, a manager and volunteers, each a daemon of its own."""

    manager: Daemon
    # How the manager was started, to start it again at the same address.
    manager_args: list[str]
    volunteer: Daemon  # the first
    volunteers: list[Daemon]
    coordinator_address: str


def start_split_pool(
    daemons: Daemons, volunteers: int = 1, volunteer_args: tuple[str, ...] = ()
) -> SplitPool:
    """Coordinator, manager and volunteers (each with `volunteer_args` too) as daemons of
    their own on loopback, explicit addresses, in a cluster of their own; returns once every
    volunteer joined."""
    common = ["--cluster", unique_cluster(), "--heartbeat", "0.5", "--no-mdns"]
    coordinator = daemons.start(
        "coordinator", "--role", "coordinator", "--listen", "127.0.0.1:0", *common
    )
    coordinator_address = coordinator.address()
    manager_args = ["--role", "manager", "--coordinator", coordinator_address, *common]
    manager = daemons.start("manager", *manager_args, "--listen", "127.0.0.1:0")
    manager.address()
    volunteer_command = ["--role", "volunteer", "--listen", "127.0.0.1:0", *volunteer_args]
    volunteer_command += ["--coordinator", coordinator_address, *common]
    # The first keeps the name "volunteer" (tests read its data dir by it).
    names = ["volunteer", *(f"volunteer-{i}" for i in range(1, volunteers))]
    started = [daemons.start(name, *volunteer_command) for name in names]
    ids = {v.address() and v.node_id for v in started}
    wait_until(lambda: ids <= set(list_volunteers(coordinator_address)), 15, "join")
    return SplitPool(manager, manager_args, started[0], started, coordinator_address)


def volunteers_by_id(coordinator: Daemon) -> dict[str, dict[str, Any]]:
    listing = cli_json("volunteers", "--data-dir", str(coordinator.data_dir))
    return {volunteer["id"]: volunteer for volunteer in listing}


def list_volunteers(address: str) -> dict[str, Any]:
    """The coordinator's registry straight over gRPC (fast enough to poll), by volunteer id."""
    import grpc

    from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
    from daemon.transport.channels import open_sync_channel

    with open_sync_channel(address, admin_credential()) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        try:
            reply = stub.ListVolunteers(coordinator_pb2.ListVolunteersRequest(), timeout=2)
        except grpc.RpcError:
            return {}
    return {v.volunteer_id: v for v in reply.volunteers}


NODE_DEADLINE_SECONDS = 15.0


@asynccontextmanager
async def serving(node: Node) -> AsyncIterator[str]:
    """Runs `node` until the block ends; yields its address once it answers. The node
    starts as if it had joined the test session's cluster."""
    provision(node.config.data_dir, node.config.roles)
    running = asyncio.get_running_loop().create_task(node.run())
    try:
        deadline = time.monotonic() + NODE_DEADLINE_SECONDS
        while node.address is None or not (node.config.data_dir / "address").exists():
            if running.done():
                running.result()  # raises what stopped it
                raise AssertionError("the node stopped")
            assert time.monotonic() < deadline, "the node did not start"
            await asyncio.sleep(0.02)
        yield node.address
        assert not running.done(), "the node stopped"
    finally:
        node.request_stop()
        await asyncio.wait_for(running, NODE_DEADLINE_SECONDS)
