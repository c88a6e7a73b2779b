"""What an idle volunteer asks the real Docker engine without aiodocker (daemon/runtime/
engine.py) agrees with aiodocker, and a killed run's containers are removed that way."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import aiodocker
import pytest

from daemon.resources import probe_docker
from daemon.runtime import engine
from daemon.runtime.engine import OWNER_LABEL, DockerOnDemand

pytestmark = [pytest.mark.integration, pytest.mark.docker]


async def test_the_images_listed_without_aiodocker_are_aiodockers() -> None:
    host = engine.docker_host()
    assert engine.local_socket(host) is not None, "the tests' engine is on a local socket"
    async with aiodocker.Docker() as docker:
        listed = await docker.images.list()
    assert await engine.list_images(str(host)) == listed
    available, tags = await probe_docker()
    assert available
    assert set(tags) <= {tag for image in listed for tag in image.get("RepoTags") or []}


def containers_labelled(owner: str) -> list[str]:
    listing = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={OWNER_LABEL}={owner}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return listing.stdout.split()


def leave_containers(owner: str, count: int, image: str) -> None:
    """What a volunteer killed mid-run leaves: containers labelled with its id."""
    for _ in range(count):
        subprocess.run(
            ["docker", "create", "--label", f"{OWNER_LABEL}={owner}", image, "true"],
            capture_output=True, check=True,
        )  # fmt: skip


def remove_containers(*owners: str) -> None:
    for owner in owners:
        for container in containers_labelled(owner):
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


async def test_a_killed_runs_containers_are_removed_and_no_one_elses(worker_image: str) -> None:
    owner, stranger = f"test-{uuid.uuid4().hex[:12]}", f"test-{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(leave_containers, owner, 2, worker_image)
    await asyncio.to_thread(leave_containers, stranger, 1, worker_image)
    try:
        docker = DockerOnDemand(owner=owner)
        assert await docker.remove_leftovers() == 2
        assert await asyncio.to_thread(containers_labelled, owner) == []
        assert len(await asyncio.to_thread(containers_labelled, stranger)) == 1
        assert await docker.remove_leftovers() == 0
        await docker.close()
    finally:
        await asyncio.to_thread(remove_containers, owner, stranger)
