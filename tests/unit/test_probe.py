"""What an idle volunteer asks Docker, in a child process (daemon/runtime/probe.py), when there
is no engine to answer: each failure says why, the child is bounded in time and in what it
says, and the event loop runs on while it works. Against the real engine:
tests/integration/test_docker_probe.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.resources import probe_docker
from daemon.runtime import probe
from daemon.runtime.probe import ProbeError


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """DOCKER_HOST names a socket where nothing listens."""
    path = tmp_path / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    return path


async def test_no_engine_where_docker_host_points_says_so(no_engine: Path) -> None:
    with pytest.raises(ProbeError) as raised:
        await probe.image_tags()
    assert str(raised.value) == (
        f"Cannot connect to Docker Engine via unix://{no_engine} [Cannot connect to unix socket "
        f"{no_engine} ssl:default [No such file or directory]]: no Docker engine answers "
        "there; start it, or set DOCKER_HOST"
    )
    assert await probe_docker() == (False, ())
    with pytest.raises(ProbeError, match="no Docker engine answers there"):
        await probe.remove_leftovers("v1")


async def test_a_docker_host_that_names_no_engine_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "docker.example:2375")
    with pytest.raises(ProbeError) as raised:
        await probe.image_tags()
    assert str(raised.value) == (
        "cannot reach the Docker engine (Missing protocol scheme in docker_host.): check "
        "DOCKER_HOST"
    )


def test_a_machine_without_docker_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No DOCKER_HOST, no Docker context, no socket where aiodocker looks (run in process,
    with aiodocker's list of places emptied: this machine has Docker)."""
    import aiodocker.docker

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.docker/config.json naming a context
    monkeypatch.setattr(aiodocker.docker, "_sock_search_paths", [tmp_path / "docker.sock"])
    assert probe.main(["images"]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "error": "no Docker engine here: DOCKER_HOST is not set and there is no Docker socket "
        "(/var/run/docker.sock); install and start Docker, or set DOCKER_HOST"
    }


async def test_a_question_the_child_does_not_know_is_refused() -> None:
    for question in (["bogus"], [], ["images", "extra"], ["remove-leftovers", ""]):
        with pytest.raises(ProbeError, match="no such question to Docker"):
            await probe.ask(question, 60)


@dataclass
class HungEngine:
    """A socket that takes connections and never answers, as a hung engine does; it sees
    when each connection is closed (the child that made it is gone)."""

    path: Path
    connected: int = 0
    closed: int = 0


@contextlib.asynccontextmanager
async def hung_engine(path: Path) -> AsyncIterator[HungEngine]:
    engine = HungEngine(path)

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        engine.connected += 1
        try:
            while await reader.read(1 << 16):
                pass  # what it asks is never answered
        finally:
            engine.closed += 1
            writer.close()

    server = await asyncio.start_unix_server(hold, str(path))
    try:
        yield engine
    finally:
        server.close()


async def wait_for(condition: object, seconds: float, what: str) -> None:
    """Polls `condition` (a callable) until it holds, for `seconds` at most."""
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_child_past_its_time_is_stopped_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.setattr(probe, "START_SECONDS", 0.0)
    monkeypatch.setattr(probe, "ENGINE_SECONDS", {**probe.ENGINE_SECONDS, "images": 1.5})
    async with hung_engine(path) as engine:
        started = time.monotonic()
        with pytest.raises(ProbeError) as raised:
            await probe.image_tags()
        took = time.monotonic() - started
        await wait_for(lambda: engine.closed == engine.connected > 0, 10, "the child to go")
    assert str(raised.value) == (
        "the Docker probe did not answer in 1.5 s and was stopped: is the Docker engine hung, "
        "or this machine overloaded?"
    )
    assert 1.5 <= took < 5


async def test_the_event_loop_runs_on_while_the_child_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.setattr(probe, "START_SECONDS", 0.0)
    monkeypatch.setattr(probe, "ENGINE_SECONDS", {**probe.ENGINE_SECONDS, "images": 1.5})
    longest = 0.0

    async def tick() -> None:
        nonlocal longest
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            longest = max(longest, time.monotonic() - before)

    async with hung_engine(path):
        ticker = asyncio.get_running_loop().create_task(tick())
        try:
            with pytest.raises(ProbeError, match=r"did not answer in 1\.5 s"):
                await probe.image_tags()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    assert longest < 0.5, f"the loop stood still for {longest:.2f} s"


async def test_a_cancelled_question_stops_its_child(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    async with hung_engine(path) as engine:
        asking = asyncio.get_running_loop().create_task(probe.image_tags())
        await wait_for(lambda: engine.connected > 0, 30, "the child to ask the engine")
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        await wait_for(lambda: engine.closed == engine.connected, 10, "the child to go")


def test_the_child_says_when_the_engine_does_not_answer_in_its_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The child's own bound on the engine (what it prints, run here in process)."""
    path = tmp_path / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.setattr(probe, "ENGINE_SECONDS", {**probe.ENGINE_SECONDS, "images": 0.5})
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(path))
    listening.listen()  # connections wait in its backlog, never answered
    try:
        assert probe.main(["images"]) == 1
    finally:
        listening.close()
    assert json.loads(capsys.readouterr().out) == {
        "error": "the Docker engine did not answer in 0.5 s: is it hung?"
    }


async def test_a_child_saying_too_much_is_not_read_on(
    no_engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "MAX_ANSWER_BYTES", 40)
    with pytest.raises(ProbeError, match=r"^the Docker probe said more than 40 bytes$"):
        await probe.image_tags()


async def test_a_child_that_cannot_start_or_dies_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(ProbeError, match=r"cannot start .*no-python to ask Docker"):
        await probe.image_tags()
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(
        ProbeError,
        match=r"the Docker probe \(/bin/false -m daemon.runtime.probe\) failed \(exit code 1: "
        r"no message\); check that aiodocker is installed for /bin/false",
    ):
        await probe.image_tags()


@pytest.fixture
def forbidden_socket() -> Iterator[Path]:
    """A socket the user that runs the child (nobody, when the tests run as root) may not
    use, in a directory it may enter."""
    directory = Path(tempfile.mkdtemp(prefix="vcnode-probe-"))
    directory.chmod(0o755)
    path = directory / "docker.sock"
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(path))
    listening.listen()
    path.chmod(0o000)
    try:
        yield path
    finally:
        listening.close()
        shutil.rmtree(directory)


def test_permission_denied_on_the_socket_says_what_to_do(forbidden_socket: Path) -> None:
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.getuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running the child as another user than root needs setpriv")
    asked = subprocess.run(
        [*(as_nobody if os.getuid() == 0 else []), sys.executable, "-m", probe.__name__, "images"],
        env={**os.environ, "DOCKER_HOST": f"unix://{forbidden_socket}"},
        cwd=Path(probe.__file__).resolve().parents[2],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert asked.returncode == 1, asked.stderr
    uid = 65534 if os.getuid() == 0 else os.getuid()
    assert json.loads(asked.stdout) == {
        "error": f"Cannot connect to Docker Engine via unix://{forbidden_socket} [Cannot "
        f"connect to unix socket {forbidden_socket} ssl:default [Permission denied]]: the user "
        f"running the volunteer (uid {uid}) may not use the Docker engine; add it to the "
        "`docker` group, or set DOCKER_HOST to an engine it may use"
    }
