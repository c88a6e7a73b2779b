"""`node demo`: the whole mesh on this machine, as real processes on loopback."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from daemon.client import views
from daemon.datadir import read_address
from daemon.errors import NodeError
from daemon.models import Volunteer, VolunteerState
from daemon.rpc.v1 import coordinator_pb2, coordinator_pb2_grpc
from daemon.transport import convert
from daemon.transport.channels import open_channel

START_TIMEOUT_SECONDS = 20.0


def add_demo_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="run a coordinator, a manager and volunteers here, and show the pool form"
    )
    parser.add_argument("--volunteers", type=int, default=2, metavar="N")
    parser.add_argument("--keep", action="store_true", help="keep the demo's data dirs")
    parser.set_defaults(handler=run_demo)


class ProcessGroup:
    """Daemons started as child processes, stopped together with SIGTERM."""

    def __init__(self, workdir: Path, cluster: str) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, roles: str) -> Path:
        data_dir = self.workdir / name
        log = (self.workdir / f"{name}.log").open("wb")
        command = [
            sys.executable, "-m", "daemon", "daemon",
            "--role", roles,
            "--listen", "127.0.0.1:0",
            "--cluster", self.cluster,
            "--data-dir", str(data_dir),
            "--heartbeat", "1",
        ]  # fmt: skip
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=log)
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


async def _online_volunteers(address: str) -> list[Volunteer]:
    channel = open_channel(address)
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


def run_demo(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="vcnode-demo-"))
    cluster = f"demo-{uuid.uuid4().hex[:6]}"
    group = ProcessGroup(workdir, cluster)
    print(f"vcnode demo: cluster {cluster!r}, data and logs in {workdir}")
    try:
        coordinator_dir = group.start("coordinator", "coordinator,manager")
        address = _wait_for_address(group, coordinator_dir)
        print(f"coordinator + manager serving at {address}")
        for index in range(args.volunteers):
            group.start(f"volunteer-{index + 1}", "volunteer")
        print(
            f"started {args.volunteers} volunteers, each given only --cluster {cluster}: "
            "they find the coordinator on mDNS"
        )
        started = time.monotonic()
        deadline = started + START_TIMEOUT_SECONDS
        while True:
            group.check_alive()
            volunteers = asyncio.run(_online_volunteers(address))
            online = [v for v in volunteers if v.state is VolunteerState.ONLINE]
            if len(online) >= args.volunteers:
                break
            if time.monotonic() > deadline:
                raise NodeError(
                    f"only {len(online)} of {args.volunteers} volunteers joined in time"
                )
            time.sleep(0.1)
        print(f"all {len(online)} volunteers online after {time.monotonic() - started:.2f} s:\n")
        print(views.volunteers_table(volunteers))
        print(
            "\nTask execution (node submit, the built-in matrix multiplication) is the next "
            "milestone; this demo shows the pool forming by itself."
        )
    finally:
        codes = group.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    unclean = {name: code for name, code in codes.items() if code != 0}
    if unclean:
        raise NodeError(f"demo daemons did not stop cleanly: {unclean}")
    print("all daemons stopped cleanly")
    return 0
