"""task_overhead_ratio: what the mesh adds to tiny container tasks, against Docker alone.

- task_overhead_direct_seconds: 100 tiny containers straight through aiodocker at
  concurrency 2 (create, start, wait, logs, delete), each with its own input dir holding
  one small file and an output dir read back afterwards, the lockdown built by the
  runtime's own `container_config`.
- task_overhead_mesh_seconds: the same 100 containers as a workflow of 100 explicit tasks
  through real daemons on loopback (one coordinator+manager, one volunteer with
  `--max-concurrent-tasks 2` that joins with a token made through the coordinator; every
  channel mutual TLS), from `node submit --wait` starting to it exiting (the client
  uploads the 100 inputs, the manager splits and queues, the volunteer fetches, runs,
  uploads, reports).
- task_overhead_ratio: the median over ROUNDS back-to-back pairs of mesh / direct.

One throwaway container warms the image for both sides first; then, ROUNDS times, direct
and the mesh, in alternating order (fresh daemons and data dirs each round).
Every container this benchmark starts carries its token in its name and is removed at the
end; daemons are stopped and temp dirs removed even on failure.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from benchmarks.daemons import cli, completed, join_token, start_daemon, stop, wait_for_address
from benchmarks.report import Figure

TASKS = 100
# Direct/mesh pairs; the ratio reported is the median of the pairs' ratios.
ROUNDS = 5
CONCURRENCY = 2
IMAGE = "vcnode/worker:1"
COMMAND = ("sh", "-c", "cat /input/in.txt > /output/out.txt")
# The task defaults an explicit [[tasks]] entry gets (workflows/file.py), so both sides
# run with the same limits.
CPUS = 1.0
MEMORY_MB = 256
TIMEOUT_SECONDS = 3600
JOIN_TIMEOUT = 20.0
MESH_TIMEOUT = 150.0
REPO = Path(__file__).resolve().parents[1]


def _payload(i: int, token: str) -> str:
    # Distinct per task (and per run), so no two inputs share a blob.
    return f"task {i:03d} of {token}\n"


# --- image ----------------------------------------------------------------------------------


def _ensure_image() -> None:
    found = subprocess.run(
        ["docker", "image", "inspect", IMAGE], capture_output=True, check=False
    ).returncode
    if found != 0:
        subprocess.run(["bash", str(REPO / "images/worker/build.sh"), IMAGE], check=True)


# --- direct: aiodocker alone ------------------------------------------------------------------


async def _direct_one(docker: Any, root: Path, name: str, payload: str) -> None:
    from daemon.runtime.docker import container_config
    from daemon.runtime.spec import RunSpec

    input_dir, output_dir = root / name / "input", root / name / "output"
    input_dir.mkdir(parents=True)
    output_dir.mkdir()
    output_dir.chmod(0o777)  # the container runs as nobody, as on a volunteer
    (input_dir / "in.txt").write_text(payload)
    spec = RunSpec(
        run_id=name,
        image=IMAGE,
        command=COMMAND,
        input_dir=input_dir,
        output_dir=output_dir,
        cpus=CPUS,
        memory_mb=MEMORY_MB,
        timeout_seconds=TIMEOUT_SECONDS,
    )
    container = await docker.containers.create(config=container_config(spec), name=name)
    try:
        await container.start()
        state = await container.wait()
        await container.log(stdout=True, tail=200)
        await container.log(stderr=True, tail=200)
    finally:
        await container.delete(force=True)
    if state.get("StatusCode") != 0:
        raise RuntimeError(f"direct container {name} exited with {state}")
    written = (output_dir / "out.txt").read_text()
    if written != payload:
        raise RuntimeError(f"direct container {name} wrote {written!r}, expected {payload!r}")


async def _direct(root: Path, token: str, count: int) -> float:
    """Wall time of `count` containers at CONCURRENCY, through aiodocker."""
    import aiodocker

    docker = aiodocker.Docker()
    try:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with gate:
                await _direct_one(
                    docker, root, f"vcnode-bench-{token}-d{i:03d}", _payload(i, token)
                )

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started
    finally:
        await docker.close()


# --- the mesh -------------------------------------------------------------------------------


def _write_workflow(root: Path, token: str) -> Path:
    lines = [f'[workflow]\nname = "ovh-{token}"\n']
    for i in range(TASKS):
        name = f"in-{i:03d}.txt"
        (root / name).write_text(_payload(i, token))
        lines.append(
            f'[[tasks]]\nname = "t{i:03d}"\nimage = "{IMAGE}"\n'
            f"command = {json.dumps(list(COMMAND))}\n"
            f'inputs = {{ "in.txt" = "{name}" }}\noutputs = ["out.txt"]\n'
        )
    path = root / "overhead.toml"
    path.write_text("\n".join(lines))
    return path


def _wait_for_volunteer(manager_dir: Path, volunteer_id: str) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    while time.monotonic() < deadline:
        result = cli("volunteers", "--data-dir", str(manager_dir), "--json")
        if result.returncode == 0:
            for volunteer in json.loads(result.stdout):
                if volunteer.get("id") == volunteer_id and volunteer.get("connected"):
                    return
        time.sleep(0.2)
    raise RuntimeError(f"volunteer {volunteer_id} did not join within {JOIN_TIMEOUT:g} s")


def _mesh(root: Path, token: str) -> float:
    """Wall time of `node submit --wait` for the 100-task workflow through real daemons."""
    common = ["--listen", "127.0.0.1:0", "--cluster", f"bench-{token}"]
    root.mkdir()
    manager_dir, volunteer_dir = root / "manager", root / "volunteer"
    workflow = _write_workflow(root, token)
    started: list[subprocess.Popen[bytes]] = []
    try:
        manager = start_daemon(manager_dir, "--role", "coordinator,manager", *common)
        started.append(manager)
        wait_for_address(manager, manager_dir)
        volunteer = start_daemon(
            volunteer_dir,
            "--role", "volunteer", "--max-concurrent-tasks", str(CONCURRENCY),
            "--token", join_token(manager_dir), *common,
        )  # fmt: skip
        started.append(volunteer)
        wait_for_address(volunteer, volunteer_dir)
        _wait_for_volunteer(manager_dir, (volunteer_dir / "node_id").read_text().strip())

        cpu_before = _cpu_seconds(manager), _cpu_seconds(volunteer)
        began = time.perf_counter()
        result = cli(
            "submit", str(workflow), "--data-dir", str(manager_dir), "--wait", "--json",
            timeout=MESH_TIMEOUT,
        )  # fmt: skip
        elapsed = time.perf_counter() - began
        completed(result, TASKS)
        print(
            f"task_overhead: daemon CPU for {TASKS} tasks: coordinator+manager "
            f"{_cpu_seconds(manager) - cpu_before[0]:.2f} s, volunteer "
            f"{_cpu_seconds(volunteer) - cpu_before[1]:.2f} s",
            file=sys.stderr,
        )
        return elapsed
    except BaseException:
        _stop_all(started)
        _keep_logs(root)
        raise
    finally:
        _stop_all(started)


def _cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """User + system CPU time the process has used so far."""
    times = psutil.Process(process.pid).cpu_times()
    return float(times.user + times.system)


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        try:
            stop(process)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _keep_logs(root: Path) -> None:
    """On failure the daemons' logs outlive the temp dir, for whoever looks next."""
    kept = Path(tempfile.mkdtemp(prefix="vcnode-bench-task-overhead-logs-"))
    for log in root.glob("*.log"):
        shutil.copy(log, kept / log.name)
    print(f"task_overhead: daemon logs kept in {kept}", file=sys.stderr)


# --- cleanup --------------------------------------------------------------------------------


def _remove_containers(token: str) -> None:
    """Any container left with this run's token in its name (only ours carry it)."""
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name={token}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if listed:
        subprocess.run(["docker", "rm", "-f", *listed], capture_output=True, check=False)


# --- the benchmark ----------------------------------------------------------------------------


def run() -> list[Figure]:
    _ensure_image()
    token = uuid.uuid4().hex[:10]
    pairs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="vcnode-bench-task-overhead-") as tmp:
        root = Path(tmp)
        try:
            asyncio.run(_direct(root / "warm", f"{token}-warm", 1))
            # Pairs back to back, the ratio taken within each: on a shared machine a
            # single run swings by 10-15 %, and a pair sees the same conditions. Which side
            # goes first alternates, so that what the first leaves behind (Docker's
            # cleanup, dirty pages) does not always fall on the same side.
            for index in range(ROUNDS):
                tag = f"{token}-{index}"
                if index % 2:
                    mesh = _mesh(root / f"mesh-{index}", tag)
                    direct = asyncio.run(_direct(root / f"direct-{index}", tag, TASKS))
                else:
                    direct = asyncio.run(_direct(root / f"direct-{index}", tag, TASKS))
                    mesh = _mesh(root / f"mesh-{index}", tag)
                pairs.append((mesh, direct))
                print(
                    f"task_overhead: round {index + 1}: {TASKS} tasks at concurrency "
                    f"{CONCURRENCY}: mesh {mesh:.2f} s ({1000 * mesh / TASKS:.0f} ms/task), "
                    f"direct {direct:.2f} s ({1000 * direct / TASKS:.0f} ms/task), "
                    f"ratio {mesh / direct:.3f}",
                    file=sys.stderr,
                )
        finally:
            _remove_containers(token)
    ratio = statistics.median(mesh / direct for mesh, direct in pairs)
    return [
        Figure("task_overhead_ratio", ratio, "x", "<=", 1.15),
        Figure(
            "task_overhead_mesh_seconds",
            statistics.median(mesh for mesh, _ in pairs),
            "s",
            "<=",
            MESH_TIMEOUT,
        ),
        Figure(
            "task_overhead_direct_seconds",
            statistics.median(direct for _, direct in pairs),
            "s",
            "<=",
            MESH_TIMEOUT,
        ),
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure.line(), flush=True)
