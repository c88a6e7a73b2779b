"""The few Docker answers an idle volunteer asks for without aiodocker (daemon/runtime/
engine.py): which engine aiodocker would dial, and HTTP answers read whole, whichever way the
engine frames them. Against the real engine: tests/integration/test_engine.py."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from daemon.runtime import engine
from daemon.runtime.engine import EngineError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home without Docker's config, and socket paths under tmp_path, none there yet."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(engine, "SOCKET_PATHS", (tmp_path / "run.sock", tmp_path / "var.sock"))
    return tmp_path / "home"


def listening_socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return server


def test_without_configuration_the_first_socket_there_is_the_engine(home: Path) -> None:
    assert engine.docker_host({}) is None
    first, second = engine.SOCKET_PATHS[0], engine.SOCKET_PATHS[1]
    with listening_socket(second):
        assert engine.docker_host({}) == f"unix://{second}"
        with listening_socket(first):
            assert engine.docker_host({}) == f"unix://{first}"
    (home / ".docker").mkdir()
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert engine.docker_host({"DOCKER_HOST": "unix:///x.sock"}) == "unix:///x.sock"


def test_a_context_or_a_remote_host_is_left_to_aiodocker(home: Path) -> None:
    assert engine.docker_host({"DOCKER_CONTEXT": "remote"}) == "context:remote"
    tcp = engine.docker_host({"DOCKER_HOST": "tcp://10.0.0.1:2376"})
    assert tcp == "tcp://10.0.0.1:2376"
    assert engine.local_socket(tcp) is None
    assert engine.local_socket("context:remote") is None
    assert engine.local_socket("unix:///run/docker.sock") == Path("/run/docker.sock")
    (home / ".docker").mkdir()
    config = home / ".docker" / "config.json"
    config.write_text(json.dumps({"currentContext": "colima"}))
    assert engine.docker_host({"DOCKER_HOST": "unix:///x.sock"}) == "context:colima"
    assert engine.docker_host({"DOCKER_CONTEXT": "default", "DOCKER_HOST": "unix:///x.sock"}) == (
        "unix:///x.sock"
    ), "DOCKER_CONTEXT comes before the config file"
    config.write_text("{not json")
    assert engine.docker_host({}) == "context:?", "aiodocker refuses it, and says why"


@asynccontextmanager
async def engine_answering(path: Path, answer: bytes) -> AsyncIterator[list[bytes]]:
    """An engine's socket at `path` that answers every request with `answer` and hangs up;
    yields the requests (their heads) as they come."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield requests
    finally:
        server.close()
        await server.wait_closed()


IMAGES = [{"Id": "sha256:1", "RepoTags": ["vcnode/worker:1"]}, {"Id": "sha256:2"}]
BODY = json.dumps(IMAGES).encode()


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(BODY), BODY),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY, 7),
        b"HTTP/1.0 200 OK\r\n\r\n" + BODY,  # until the engine hangs up
    ],
    ids=["content-length", "chunked", "until-closed"],
)
async def test_an_answer_reads_whole_however_it_is_framed(tmp_path: Path, answer: bytes) -> None:
    path = tmp_path / "engine.sock"
    async with engine_answering(path, answer) as requests:
        assert await engine.list_images(f"unix://{path}") == IMAGES
    assert requests[0].startswith(b"GET /images/json HTTP/1.1\r\n")


async def test_an_error_status_says_the_engines_message(tmp_path: Path) -> None:
    path = tmp_path / "engine.sock"
    message = b'{"message": "No such container: abc"}'
    answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message)
    async with engine_answering(path, answer) as requests:
        with pytest.raises(EngineError, match="No such container: abc") as raised:
            await engine.call(path, "DELETE", "/containers/abc?force=1")
    assert raised.value.status == 404
    assert requests[0].startswith(b"DELETE /containers/abc?force=1 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "did not answer as HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[1, 2", "cut short"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1, 2", "cut short"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n<html", "not JSON"),
    ],
)
async def test_an_answer_that_is_not_one_is_an_engine_error(
    tmp_path: Path, answer: bytes, problem: str
) -> None:
    path = tmp_path / "engine.sock"
    async with engine_answering(path, answer):
        with pytest.raises(EngineError, match=problem):
            await engine.call(path, "GET", "/images/json")


async def test_no_engine_at_the_socket_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file"):
        await engine.call(tmp_path / "none.sock", "GET", "/images/json")
