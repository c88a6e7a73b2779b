"""Shared test configuration: Docker availability is checked once, and under CI its absence
is a failure, not a skip."""

from __future__ import annotations

import os

import pytest


async def _docker_answers() -> bool:
    from daemon.resources import probe_docker

    available, _ = await probe_docker()
    return available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("docker") for item in items):
        return
    import asyncio

    if asyncio.run(_docker_answers()):
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI is set but no Docker engine answers: start dockerd first")
    skip = pytest.mark.skip(reason="no Docker engine answers (start dockerd to run these)")
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(skip)
