"""A volunteer whose Docker engine lacks the task's image pulls it from its registry (when
its owner allows) or gets it from the manager.

The volunteer runs against a second Docker engine of its own (its own image store, as on
another machine), so the image can only arrive over TransferService.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import (
    Daemons,
    run_cli,
    start_pool,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def image_id(image: str, host: str | None = None) -> str | None:
    command = [
        "docker",
        *(["-H", host] if host else []),
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        image,
    ]
    found = subprocess.run(command, capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


@pytest.fixture
def second_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`unix://SOCKET` of a second dockerd with an empty image store."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root to start a second Docker engine")
        pytest.skip("starting a second Docker engine needs root")
    root = tmp_path_factory.mktemp("engine")
    socket = f"unix://{root}/docker.sock"
    log = (root / "dockerd.log").open("wb")
    engine = subprocess.Popen(
        [
            "dockerd", "--data-root", f"{root}/data", "--exec-root", f"{root}/exec",
            "--pidfile", f"{root}/docker.pid", "-H", socket,
            "--bridge=none", "--iptables=false", "--ip-masq=false",
        ],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                subprocess.run(
                    ["docker", "-H", socket, "info"], capture_output=True, check=False
                ).returncode
                == 0
            ),
            30,
            "the second Docker engine",
        )
        yield socket
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def test_volunteer_loads_the_image_from_the_manager(
    daemons: Daemons, tmp_path: Path, worker_image: str, second_engine: str
) -> None:
    assert image_id(worker_image, second_engine) is None
    manager, [volunteer] = start_pool(daemons, env={"DOCKER_HOST": second_engine})
    workflow = tmp_path / "w.toml"
    script = "import numpy; open('/output/v.txt', 'w').write(numpy.__version__)"
    workflow.write_text(
        '[workflow]\nname = "image"\n\n[[tasks]]\nname = "hello"\n'
        f"command = {json.dumps(['python3', '-c', script])}\n"
        'outputs = ["v.txt"]\n'
    )
    submitted = run_cli(
        "submit", str(workflow), "--data-dir", str(manager.data_dir), "--wait", "--json",
        timeout=300,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + volunteer.log + manager.log
    assert "loaded image vcnode/worker:1" in volunteer.log
    # Loaded by ID, and tagged with nothing: a peer's archive moves no tag here.
    assert image_id(str(image_id(worker_image)), second_engine) == image_id(worker_image)
    assert image_id(worker_image, second_engine) is None
    out = tmp_path / "out"
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    run_cli("results", workflow_id, "--data-dir", str(manager.data_dir), "-o", str(out))
    assert (out / "hello" / "v.txt").read_text().startswith("1.")


def test_an_image_from_the_manager_never_moves_the_owners_tag(
    daemons: Daemons, tmp_path: Path, worker_image: str, second_engine: str
) -> None:
    """The owner's own image under the task's tag stays the owner's: the task runs the image
    it pins (by ID), loaded from the manager without its tags."""
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs" / "owners").write_text("the owner's own image")
    imported = subprocess.run(
        ["docker", "-H", second_engine, "import", "-", worker_image],
        input=subprocess.run(
            ["tar", "-C", str(tmp_path / "rootfs"), "-c", "."], capture_output=True, check=True
        ).stdout,
        capture_output=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    owners = image_id(worker_image, second_engine)
    assert owners is not None
    assert owners != image_id(worker_image)
    manager, [volunteer] = start_pool(daemons, env={"DOCKER_HOST": second_engine})
    workflow = tmp_path / "w.toml"
    workflow.write_text(
        '[workflow]\nname = "image"\n\n[[tasks]]\nname = "hello"\n'
        "command = [\"python3\", \"-c\", \"open('/output/ok', 'w').write('ok')\"]\n"
        'outputs = ["ok"]\n'
    )
    submitted = run_cli(
        "submit", str(workflow), "--data-dir", str(manager.data_dir), "--wait", "--json",
        timeout=300,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + volunteer.log + manager.log
    assert image_id(worker_image, second_engine) == owners, "the owner's tag did not move"


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HOST:PORT of a real registry (Docker's distribution, Debian's docker-registry) on
    loopback, which Docker engines trust without TLS."""
    binary = shutil.which("docker-registry")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install docker-registry (see .ci/run)")
        pytest.skip("no docker-registry binary (apt install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
        "http:\n  addr: 127.0.0.1:0\n"
    )
    log_path = root / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    listening = re.compile(r"listening on (127\.0\.0\.1:\d+)")
    try:
        wait_until(lambda: listening.search(log_path.read_text()) is not None, 15, "the registry")
        found = listening.search(log_path.read_text())
        assert found is not None
        yield found[1]
    finally:
        process.terminate()
        process.wait(timeout=15)
        shutil.rmtree(root, ignore_errors=True)


def test_volunteer_pulls_the_image_from_its_registry_when_its_owner_allows(
    daemons: Daemons, tmp_path: Path, worker_image: str, second_engine: str, registry: str
) -> None:
    tagged = f"{registry}/vcnode/worker:1"
    subprocess.run(["docker", "tag", worker_image, tagged], check=True)
    try:
        pushed = subprocess.run(["docker", "push", tagged], capture_output=True, text=True)
        assert pushed.returncode == 0, pushed.stderr
        manager, [volunteer] = start_pool(
            daemons, "--allow-pull", env={"DOCKER_HOST": second_engine}
        )
        workflow = tmp_path / "w.toml"
        workflow.write_text(
            '[workflow]\nname = "pull"\n\n[[tasks]]\nname = "hello"\n'
            f'image = "{tagged}"\n'
            'command = ["sh", "-c", "echo pulled > /output/p.txt"]\noutputs = ["p.txt"]\n'
        )
        submitted = run_cli(
            "submit", str(workflow), "--data-dir", str(manager.data_dir), "--wait", "--json",
            timeout=300,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr + volunteer.log
        assert f"pulled image {tagged}" in volunteer.log
        assert "from the manager" not in volunteer.log, "the registry came first"
        assert image_id(tagged, second_engine) == image_id(worker_image)
    finally:
        subprocess.run(["docker", "rmi", tagged], capture_output=True, check=False)
