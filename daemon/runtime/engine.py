"""What an idle volunteer asks Docker (is an engine there, which images it holds, which
containers a killed run of this volunteer left), over the engine's local socket, without
aiodocker.

aiodocker brings aiohttp, ~12 MiB a process never gives back. A volunteer that only waits for
work needs three small JSON answers, so they are asked here with a few lines of HTTP; tasks,
pulls and image loads still go through aiodocker (daemon/runtime/docker.py), imported by the
first task that needs Docker (`DockerOnDemand`). An engine this module does not speak to (a
TCP or SSH `DOCKER_HOST`, a Docker context) is left to aiodocker from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from daemon.runtime.spec import OutputCallback, ProgressCallback, RunResult, RunSpec

if TYPE_CHECKING:
    from daemon.runtime.docker import DockerRuntime

log = logging.getLogger(__name__)

# The label a volunteer's containers carry: its id (daemon/runtime/docker.py sets it).
OWNER_LABEL = "vcnode.volunteer"
UNIX = "unix://"
# Where aiodocker looks for the engine's socket when nothing says where it is, in its order.
SOCKET_PATHS = (
    Path("/run/docker.sock"),
    Path("/var/run/docker.sock"),
    Path.home() / ".docker/run/docker.sock",
)
# An image list of a few thousand images is ~1 MiB.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class EngineError(Exception):
    """The engine answered with an error status, or not as HTTP."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (status {status})" if status else message)
        self.status = status


def docker_host(environ: Mapping[str, str] | None = None) -> str | None:
    """Where aiodocker.Docker() would reach the engine, worked out as it does: a Docker
    context (`context:NAME`, which only aiodocker reads), else DOCKER_HOST, else the first
    socket that exists; None when there is none."""
    environ = os.environ if environ is None else environ
    context = environ.get("DOCKER_CONTEXT")
    if context is None:
        try:
            config = json.loads((Path.home() / ".docker" / "config.json").read_bytes())
            context = config.get("currentContext") if isinstance(config, dict) else "?"
        except OSError:
            context = None
        except ValueError:
            context = "?"  # aiodocker refuses it, and says why
    if context not in (None, "default"):
        return f"context:{context}"
    host = environ.get("DOCKER_HOST")
    if host is not None:
        return host
    for path in SOCKET_PATHS:
        if path.is_socket():
            return UNIX + str(path)
    return None


def local_socket(host: str | None) -> Path | None:
    """The unix socket `host` (as `docker_host` gives it) names, if it names one."""
    if host is None or not host.startswith(UNIX):
        return None
    return Path(host.removeprefix(UNIX))


async def call(socket: Path, method: str, target: str) -> Any:
    """One request without a body to the engine at `socket`; its JSON answer (None when it
    has none). EngineError for an error status, OSError when the socket does not answer."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
            "Content-Length: 0\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        status, headers = await _head(reader)
        body = await _body(reader, headers)
    except asyncio.IncompleteReadError:
        raise EngineError(0, "the engine's answer is cut short") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    try:
        answer = json.loads(body) if body.strip() else None
    except ValueError:
        if status >= 400:
            raise EngineError(status, body[:200].decode(errors="replace").strip()) from None
        raise EngineError(status, "the engine's answer is not JSON") from None
    if status >= 400:
        message = answer.get("message") if isinstance(answer, dict) else None
        raise EngineError(status, str(message or answer))
    return answer


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    parts = (await reader.readline()).split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise EngineError(0, "the engine did not answer as HTTP")
    headers: dict[str, str] = {}
    while line := (await reader.readline()).strip():
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                length = int((await reader.readline()).split(b";")[0], 16)
            except ValueError:
                raise EngineError(0, "the engine's answer is cut short") from None
            size += length
            if size > MAX_ANSWER_BYTES:
                raise EngineError(0, f"the engine's answer is over {MAX_ANSWER_BYTES} bytes")
            if length == 0:
                return b"".join(chunks)
            chunks.append(await reader.readexactly(length))
            await reader.readline()  # the chunk's CRLF
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_ANSWER_BYTES:
            raise EngineError(0, f"the engine's answer is over {MAX_ANSWER_BYTES} bytes")
        return await reader.readexactly(length)
    body = await reader.read(MAX_ANSWER_BYTES + 1)
    if len(body) > MAX_ANSWER_BYTES:
        raise EngineError(0, f"the engine's answer is over {MAX_ANSWER_BYTES} bytes")
    return body


async def list_images(host: str) -> list[dict[str, Any]]:
    """The engine's images, as `GET /images/json` lists them."""
    socket = local_socket(host)
    if socket is not None:
        images = await call(socket, "GET", "/images/json")
        return [image for image in images or [] if isinstance(image, dict)]
    import aiodocker  # an engine only aiodocker speaks to

    async with aiodocker.Docker() as docker:
        listed: list[dict[str, Any]] = await docker.images.list()
        return listed


class DockerOnDemand:
    """The Docker runtime of a volunteer, which imports aiodocker (through DockerRuntime)
    when the first task needs it, and removes a killed run's containers without it."""

    name = "docker"
    isolated = True

    def __init__(self, owner: str = "") -> None:
        """`owner`: the volunteer id its containers are labelled with."""
        self._owner = owner
        self._runtime: DockerRuntime | None = None

    @property
    def runtime(self) -> DockerRuntime:
        if self._runtime is None:
            from daemon.runtime.docker import DockerRuntime

            self._runtime = DockerRuntime(owner=self._owner)
        return self._runtime

    async def remove_leftovers(self) -> int:
        """Removes containers this volunteer left behind when it was killed: their runs are
        over for the pool (the tasks went elsewhere), and nobody would enforce their timeout."""
        socket = local_socket(await asyncio.to_thread(docker_host))
        if socket is None:
            return await self.runtime.remove_leftovers()
        if not self._owner:
            return 0
        filters = json.dumps({"label": [f"{OWNER_LABEL}={self._owner}"]})
        leftovers = await call(
            socket, "GET", "/containers/json?" + urlencode({"all": "1", "filters": filters})
        )
        for container in leftovers or []:
            identifier = str(container.get("Id", "")) if isinstance(container, dict) else ""
            if not identifier:
                continue
            try:
                await call(socket, "DELETE", f"/containers/{quote(identifier)}?force=1")
            except EngineError as error:
                if error.status != 404:
                    log.warning("could not remove container %s: %s", identifier, error)
        return len(leftovers or [])

    async def image_id(self, image: str) -> str | None:
        return await self.runtime.image_id(image)

    async def pull_image(self, image: str) -> None:
        await self.runtime.pull_image(image)

    async def load_image(self, archive: Path, image_id: str, scratch: Path) -> None:
        await self.runtime.load_image(archive, image_id, scratch)

    async def run(
        self, spec: RunSpec, on_progress: ProgressCallback, on_output: OutputCallback | None = None
    ) -> RunResult:
        return await self.runtime.run(spec, on_progress, on_output)

    async def close(self) -> None:
        if self._runtime is not None:
            await self._runtime.close()
