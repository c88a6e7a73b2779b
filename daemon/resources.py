"""What this machine has and how busy it is, measured with psutil (and Docker, if it answers)."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import psutil

from daemon.models import Load, Resources
from daemon.runtime import probe
from daemon.runtime.probe import ProbeError
from daemon.transport.caps import IMAGES

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def count_gpus() -> int:
    """NVIDIA devices the kernel exposes; other vendors are not detected yet."""
    return len(glob.glob("/dev/nvidia[0-9]*"))


def measure_resources(
    data_dir: Path, docker_available: bool = False, images: tuple[str, ...] = ()
) -> Resources:
    return Resources(
        cpu_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        memory_mb=psutil.virtual_memory().total // MIB,
        disk_free_mb=psutil.disk_usage(str(data_dir)).free // MIB,
        gpus=count_gpus(),
        docker_available=docker_available,
        images=images,
    )


def measure_load(running_tasks: int, unavailable: tuple[str, float] = ("", 0.0)) -> Load:
    """`unavailable`: why the volunteer takes no task now ("" when it takes tasks), and
    until when (0: until lifted)."""
    # cpu_percent(None) compares with the previous call: no blocking sample.
    return Load(
        cpu_percent=psutil.cpu_percent(None),
        memory_percent=psutil.virtual_memory().percent,
        running_tasks=running_tasks,
        unavailable=unavailable[0],
        unavailable_until=unavailable[1],
    )


async def probe_docker() -> tuple[bool, tuple[str, ...]]:
    """Whether a Docker engine answers, and the image tags it holds."""
    # Asked in a child process (daemon/runtime/probe.py): aiodocker and aiohttp are heavy,
    # and a volunteer that only waits for work keeps neither.
    try:
        tags = await probe.image_tags()
    except ProbeError as error:  # any failure means "no usable engine", and we say why
        log.info("no Docker engine answered (%s); tasks needing containers will be declined", error)
        return False, ()
    return True, tags[:IMAGES]  # what the coordinator's edge admits
