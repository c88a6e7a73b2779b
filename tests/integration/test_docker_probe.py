"""What an idle volunteer asks the real Docker engine in a child process (daemon/runtime/
probe.py): the images it holds, as the engine lists them; a killed run's containers removed,
no one else's; and the asking process never imports aiodocker or aiohttp."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from daemon.resources import probe_docker
from daemon.runtime import probe
from daemon.runtime.docker import OWNER_LABEL
from daemon.runtime.on_demand import DockerOnDemand
from daemon.transport.caps import IMAGES

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]


def engine_tags() -> list[str]:
    """The image tags `docker images` lists."""
    listing = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sorted({tag for tag in listing.stdout.split() if "<none>" not in tag})


async def test_the_images_the_probe_lists_are_the_engines(worker_image: str) -> None:
    before = await asyncio.to_thread(engine_tags)
    tags = await probe.image_tags()
    after = await asyncio.to_thread(engine_tags)
    assert worker_image in tags
    # Other sessions may tag or remove images meanwhile: what did not change must agree.
    steady = set(before) & set(after)
    assert steady <= set(tags) <= set(before) | set(after)
    assert list(tags) == sorted(tags)
    assert len(tags) <= IMAGES
    available, reported = await probe_docker()
    assert available
    assert worker_image in reported


ASKS_IN_A_CHILD = """
import asyncio, sys
from daemon.resources import probe_docker
available, tags = asyncio.run(probe_docker())
print(available, len(tags) > 0)
print(" ".join(name for name in ("aiodocker", "aiohttp") if name in sys.modules) or "-")
"""


def test_the_process_that_asks_imports_neither_aiodocker_nor_aiohttp(worker_image: str) -> None:
    asked = subprocess.run(
        [sys.executable, "-c", ASKS_IN_A_CHILD],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.split("\n")[:2] == ["True True", "-"]


def containers_labelled(owner: str) -> list[str]:
    listing = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={OWNER_LABEL}={owner}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return listing.stdout.split()


def leave_containers(owner: str, count: int, image: str, *command: str) -> None:
    """What a volunteer killed mid-run leaves: containers labelled with its id."""
    for _ in range(count):
        subprocess.run(
            ["docker", "create", "--label", f"{OWNER_LABEL}={owner}", image, *command],
            capture_output=True, check=True,
        )  # fmt: skip


def remove_containers(*owners: str) -> None:
    for owner in owners:
        for container in containers_labelled(owner):
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


async def test_a_killed_runs_containers_are_removed_and_no_one_elses(worker_image: str) -> None:
    owner, stranger = f"test-{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(leave_containers, owner, 2, worker_image, "true")
    await asyncio.to_thread(leave_containers, stranger, 1, worker_image, "true")
    # One of them still running, as a task was when its volunteer was killed.
    run = ["docker", "run", "-d", "--network", "none", "--label", f"{OWNER_LABEL}={owner}"]
    running = await asyncio.to_thread(
        subprocess.run, [*run, worker_image, "sleep", "300"], capture_output=True, check=True
    )
    assert running.stdout.strip()
    try:
        docker = DockerOnDemand(owner=owner)
        assert await docker.remove_leftovers() == 3
        assert await asyncio.to_thread(containers_labelled, owner) == []
        assert len(await asyncio.to_thread(containers_labelled, stranger)) == 1
        assert await docker.remove_leftovers() == 0
        assert docker._runtime is None, "aiodocker was not needed in this process"
        await docker.close()
    finally:
        await asyncio.to_thread(remove_containers, owner, stranger)
