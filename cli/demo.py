"""`node demo`: the whole mesh on this machine, as real processes on loopback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cli import views
from cli.credentials import client_credential
from daemon.datadir import read_address
from daemon.errors import NodeError
from daemon.models import Volunteer, VolunteerState
from daemon.resources import probe_docker
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.runtime.process import unavailable as sandbox_unavailable
from daemon.transport import convert
from daemon.transport.channels import open_channel
from daemon.trust.pki import role_name

START_TIMEOUT_SECONDS = 20.0


def add_demo_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run a coordinator, a manager and volunteers here, and multiply two matrices on them",
    )
    parser.add_argument("--volunteers", type=int, default=2, metavar="N")
    parser.add_argument("--size", type=int, default=1024, help="n for the n x n matrices")
    parser.add_argument("--blocks", type=int, default=2, help="a blocks x blocks grid of tasks")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("demo-output"),
        metavar="DIR",
        help="where to write C.npy (default ./demo-output)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo's data dirs and logs")
    parser.set_defaults(handler=run_demo)


class ProcessGroup:
    """Daemons started as child processes, stopped together with SIGTERM."""

    def __init__(self, workdir: Path, cluster: str) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, roles: str, *extra: str) -> Path:
        data_dir = self.workdir / name
        log = (self.workdir / f"{name}.log").open("wb")
        command = [
            sys.executable, "-m", "cli", "daemon",
            "--role", roles,
            "--listen", "127.0.0.1:0",
            "--cluster", self.cluster,
            "--data-dir", str(data_dir),
            "--heartbeat", "1",
            *extra,
        ]  # fmt: skip
        # The process runtime finds python3 (with numpy) first where this one lives.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        return data_dir

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise NodeError(
                    f"demo {name} exited with code {process.returncode}; "
                    f"see {self.workdir / (name + '.log')}"
                )

    def stop(self) -> dict[str, int]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return {name: process.wait(timeout=15) for name, process in self.processes.items()}


async def _online_volunteers(address: str, data_dir: Path) -> list[Volunteer]:
    channel = open_channel(address, client_credential(data_dir), role_name("coordinator"))
    try:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        reply = await stub.ListVolunteers(coordinator_pb2.ListVolunteersRequest(), timeout=5)
    finally:
        await channel.close()
    return [convert.volunteer_from_proto(v) for v in reply.volunteers]


def _wait_for_address(group: ProcessGroup, data_dir: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        group.check_alive()
        address = read_address(data_dir)
        if address:
            return address
        time.sleep(0.05)
    raise NodeError(f"the demo coordinator did not start within {START_TIMEOUT_SECONDS:g} s")


WORKFLOW = """\
[workflow]
name = "demo-matmul"
type = "matrix_multiplication"

[parameters]
size = {size}
seed = {seed}
blocks = {blocks}
"""
SEED = 2026
WORKER_IMAGE = "vcnode/worker:1"


def _choose_runtime() -> list[str]:
    """Docker with the built-in image when an engine answers; else plain processes."""
    docker_available, images = asyncio.run(probe_docker())
    if not docker_available:
        problem = sandbox_unavailable()
        if problem is not None:
            raise NodeError(f"no Docker engine answered, and {problem}")
        print("no Docker engine answered: tasks run in bubblewrap sandboxes instead")
        return ["--allow-process-runtime"]
    if WORKER_IMAGE not in images:
        script = Path(__file__).resolve().parents[1] / "images" / "worker" / "build.sh"
        print(f"building the worker image {WORKER_IMAGE} (once, about a minute) ...")
        built = subprocess.run(["bash", str(script), WORKER_IMAGE], check=False)
        if built.returncode != 0:
            raise NodeError(f"building {WORKER_IMAGE} failed; run 'make image' to see why")
    print(f"tasks run in locked-down Docker containers of {WORKER_IMAGE}")
    return []


def _wait_for_volunteers(
    group: ProcessGroup, address: str, data_dir: Path, wanted: int
) -> list[Volunteer]:
    started = time.monotonic()
    while True:
        group.check_alive()
        volunteers = asyncio.run(_online_volunteers(address, data_dir))
        online = [v for v in volunteers if v.state is VolunteerState.ONLINE]
        if len(online) >= wanted:
            took = time.monotonic() - started
            print(f"{len(online)} volunteers joined through mDNS in {took:.1f} s")
            return volunteers
        if time.monotonic() - started > START_TIMEOUT_SECONDS:
            raise NodeError(f"only {len(online)} of {wanted} volunteers joined in time")
        time.sleep(0.1)


def _volunteer_token(coordinator_dir: Path, uses: int) -> str:
    """A token for the demo's volunteers, made with the coordinator's admin credential, as
    `vcnode token create` would: vouched, as they are the demo's own machines."""
    made = subprocess.run(
        [sys.executable, "-m", "cli", "token", "create", "--role", "volunteer", "--vouched",
         "--uses", str(uses), "--ttl", "10m", "--data-dir", str(coordinator_dir), "--json"],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        raise NodeError(f"could not make a join token for the volunteers: {made.stderr.strip()}")
    token: str = json.loads(made.stdout)["token"]
    return token


def _node(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "cli", *args], check=False).returncode


def _verify(result: Path, size: int) -> float:
    import numpy as np

    from splitters.blocks import generate

    a, b = generate(size, SEED)
    c = np.load(result)
    if c.shape != (size, size):
        raise NodeError(f"C has shape {c.shape}, expected {(size, size)}")
    error = float(np.abs(c - a @ b).max())
    if not np.allclose(c, a @ b):
        raise NodeError(f"C differs from A·B computed here (max error {error:g})")
    return error


def run_demo(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="vcnode-demo-"))
    cluster = f"demo-{uuid.uuid4().hex[:6]}"
    group = ProcessGroup(workdir, cluster)
    print(f"vcnode demo: cluster {cluster!r}, data and logs in {workdir}")
    try:
        runtime_flags = _choose_runtime()
        manager_dir = group.start("coordinator", "coordinator,manager")
        address = _wait_for_address(group, manager_dir)
        print(f"coordinator + manager at {address}")
        token = _volunteer_token(manager_dir, args.volunteers)
        for index in range(args.volunteers):
            group.start(f"volunteer-{index + 1}", "volunteer", "--token", token, *runtime_flags)
        volunteers = _wait_for_volunteers(group, address, manager_dir, args.volunteers)
        print(views.volunteers_table(volunteers) + "\n")
        workflow = workdir / "matmul.toml"
        workflow.write_text(WORKFLOW.format(size=args.size, seed=SEED, blocks=args.blocks))
        print(f"C = A·B for {args.size}x{args.size} matrices, {args.blocks**2} block tasks:")
        submitted = subprocess.run(
            [sys.executable, "-m", "cli", "submit", str(workflow), "--data-dir",
             str(manager_dir), "--wait", "--json"],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        sys.stderr.write(submitted.stderr)
        if submitted.returncode != 0:
            raise NodeError(f"the workflow did not complete; see the logs in {workdir}")
        workflow_id = json.loads(submitted.stdout)["workflow_id"]
        if _node("results", workflow_id, "--data-dir", str(manager_dir), "-o", str(args.output)):
            raise NodeError("fetching the results failed")
        result = args.output / "C.npy"
        error = _verify(result, args.size)
        print(f"\nverified: C equals A·B computed here with numpy (max error {error:.1e})")
        print(f"C is in {result.resolve()}")
    finally:
        codes = group.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    unclean = {name: code for name, code in codes.items() if code != 0}
    if unclean:
        raise NodeError(f"demo daemons did not stop cleanly: {unclean}")
    return 0
