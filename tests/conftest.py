"""Shared test configuration: Docker and network namespaces are checked for once, and under
CI their absence is a failure, not a skip."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """The CLI run by tests presents the test cluster's admin credential, as if its user had
    logged in (see tests/integration/trust.py)."""
    from tests.trust import login

    config_home = Path(tempfile.mkdtemp(prefix="vcnode-test-config-"))
    os.environ["XDG_CONFIG_HOME"] = str(config_home)
    login(config_home)


async def _docker_answers() -> bool:
    from daemon.resources import probe_docker

    available, _ = await probe_docker()
    return available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _need_lan(items)
    _need_browser(items)
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


def _need_lan(items: list[pytest.Item]) -> None:
    """Tests marked `lan` run on network namespaces: skipped where none can be made (not
    root), a failure under CI."""
    if not any(item.get_closest_marker("lan") for item in items):
        return
    from tests.integration.lan import unavailable

    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI is set but the LAN tests cannot run: {reason}")
    skip = pytest.mark.skip(reason=f"{reason} (the LAN tests make network namespaces)")
    for item in items:
        if item.get_closest_marker("lan"):
            item.add_marker(skip)


def _need_browser(items: list[pytest.Item]) -> None:
    """Tests marked `browser` drive a real Chromium: skipped where there is none, a failure
    under CI (whose script installs it)."""
    if not any(item.get_closest_marker("browser") for item in items):
        return
    from tests.integration.browser import unavailable

    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI is set but the browser tests cannot run: {reason}")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


WORKER_IMAGE = "vcnode/worker:1"


@pytest.fixture(scope="session")
def worker_image() -> str:
    """The built-in worker image, built offline on first use (about a minute)."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "images" / "worker" / "build.sh"
    result = subprocess.run(
        ["bash", str(script), WORKER_IMAGE], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"building {WORKER_IMAGE} failed:\n{result.stdout}\n{result.stderr}")
    return WORKER_IMAGE
