"""What an idle volunteer asks Docker (is an engine there, which images it holds; which
containers a killed run of this volunteer left, to remove them), asked with aiodocker in a
short-lived child process: `python -m daemon.runtime.probe QUESTION`.

aiodocker brings aiohttp, ~14 MiB that a process never gives back once it imported them. A
volunteer that waits for work asks Docker only these, at its start and at each
registration, so it asks them in a child that exits once it answered and takes that memory
with it. The first task that needs Docker imports aiodocker in the volunteer itself
(daemon/runtime/on_demand.py). The child prints one line of JSON: `{"answer": ...}`, or
`{"error": ...}` saying why Docker could not be asked in words its owner can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from daemon.children import start_module
from daemon.transport.caps import IMAGES

if TYPE_CHECKING:
    import aiodocker

log = logging.getLogger(__name__)

IMAGES_QUESTION = "images"
LEFTOVERS_QUESTION = "remove-leftovers"
# How long the engine has to answer, in the child: a hung engine is told from a slow start.
ENGINE_SECONDS = {IMAGES_QUESTION: 10.0, LEFTOVERS_QUESTION: 60.0}
# On top of that, for the child to start Python and import aiodocker (~0.2 s on an idle
# machine; a loaded one takes more). Past both, the child is killed.
START_SECONDS = 20.0
# The answer is a list of at most IMAGES tags, or a count: far less than this.
MAX_ANSWER_BYTES = 1 << 20
# What is kept of the child's stderr, to say why it failed.
STDERR_TAIL_BYTES = 4096


class ProbeError(Exception):
    """Docker could not be asked, or did not answer; the message says why."""


async def image_tags() -> tuple[str, ...]:
    """The image tags the Docker engine holds (IMAGES at most, in order); ProbeError when
    no engine answers."""
    answer = await ask([IMAGES_QUESTION], ENGINE_SECONDS[IMAGES_QUESTION] + START_SECONDS)
    if not isinstance(answer, list) or not all(isinstance(tag, str) for tag in answer):
        raise ProbeError(f"the Docker probe answered {str(answer)[:100]!r}, not a list of tags")
    return tuple(answer[:IMAGES])


async def remove_leftovers(owner: str) -> int:
    """Removes the containers labelled as run by the volunteer `owner` (a run of it that was
    killed left them); how many there were. ProbeError when no engine answers."""
    answer = await ask(
        [LEFTOVERS_QUESTION, owner], ENGINE_SECONDS[LEFTOVERS_QUESTION] + START_SECONDS
    )
    if not isinstance(answer, dict) or not isinstance(answer.get("found"), int):
        raise ProbeError(f"the Docker probe answered {str(answer)[:100]!r}, not a count")
    failed = answer.get("failed")
    for failure in failed if isinstance(failed, list) else []:
        log.warning("could not remove container %s", failure)
    found: int = answer["found"]
    return found


async def ask(arguments: Sequence[str], seconds: float) -> Any:
    """The child's answer to the question `arguments`; ProbeError saying why there is none.
    The child is killed when it takes over `seconds`, says more than
    MAX_ANSWER_BYTES, or the caller is cancelled."""
    try:
        process = await start_module(__name__, *arguments, stdin=asyncio.subprocess.DEVNULL)
    except OSError as error:
        raise ProbeError(
            f"cannot start {sys.executable} to ask Docker ({error}); check that the Python "
            "that runs the node can start another of itself"
        ) from None
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = bytearray()
    # Read as it comes, so that a child that writes much there never blocks on it.
    stderr_reader = asyncio.get_running_loop().create_task(_keep_tail(process.stderr, stderr))
    try:
        async with asyncio.timeout(seconds):
            output = await _read_at_most(process.stdout, MAX_ANSWER_BYTES)
            if output is None:
                raise ProbeError(f"the Docker probe said more than {MAX_ANSWER_BYTES} bytes")
            await process.wait()
            await stderr_reader
    except TimeoutError:
        raise ProbeError(
            f"the Docker probe did not answer in {seconds:g} s and was stopped: is the Docker "
            "engine hung, or this machine overloaded?"
        ) from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        stderr_reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stderr_reader
    try:
        said = json.loads(output)
    except ValueError:
        said = None
    if isinstance(said, dict) and isinstance(said.get("error"), str):
        raise ProbeError(said["error"])
    if process.returncode != 0 or not isinstance(said, dict) or "answer" not in said:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise ProbeError(
            f"the Docker probe ({sys.executable} -m {__name__}) failed (exit code "
            f"{process.returncode}: {(lines[-1:] or ['no message'])[0]}); check that aiodocker "
            f"is installed for {sys.executable}"
        )
    return said["answer"]


async def _read_at_most(stream: asyncio.StreamReader, limit: int) -> bytes | None:
    """All of `stream`, or None once it is over `limit` bytes."""
    data = bytearray()
    while chunk := await stream.read(1 << 16):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


async def _keep_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    while chunk := await stream.read(STDERR_TAIL_BYTES):
        tail += chunk
        del tail[:-STDERR_TAIL_BYTES]


# --- the child --------------------------------------------------------------------------------


def _engine() -> aiodocker.Docker:
    """A client of the engine aiodocker finds (a Docker context, DOCKER_HOST or its socket)."""
    import aiodocker

    try:
        return aiodocker.Docker()
    except AssertionError:  # aiodocker's way of saying it found no engine to ask
        raise ProbeError(
            "no Docker engine here: DOCKER_HOST is not set and there is no Docker socket "
            "(/var/run/docker.sock); install and start Docker, or set DOCKER_HOST"
        ) from None
    except ValueError as error:
        raise ProbeError(f"cannot reach the Docker engine ({error}): check DOCKER_HOST") from None


def _cannot_connect(error: aiodocker.DockerError) -> str:
    """What Docker's refusal means to the volunteer's owner."""
    # aiodocker says which engine it tried (it leaves the connection error as the context).
    cause = getattr(error.__context__, "os_error", None)
    if isinstance(cause, PermissionError):
        return (
            f"{error.message}: the user running the volunteer (uid {os.getuid()}) may not use "
            "the Docker engine; add it to the `docker` group, or set DOCKER_HOST to an engine "
            "it may use"
        )
    if isinstance(cause, (FileNotFoundError, ConnectionRefusedError)):
        return f"{error.message}: no Docker engine answers there; start it, or set DOCKER_HOST"
    if error.status == 900:  # aiodocker's status for "no connection"
        return error.message
    return f"the Docker engine refused: {error.message} (status {error.status})"


def _question(arguments: Sequence[str]) -> tuple[str, Callable[[aiodocker.Docker], Awaitable[Any]]]:
    """Which question `arguments` ask, and how to ask it."""
    match list(arguments):
        case [question] if question == IMAGES_QUESTION:
            return question, _images
        case [question, owner] if question == LEFTOVERS_QUESTION and owner:
            return question, functools.partial(_remove_leftovers, owner=owner)
    raise ProbeError(f"no such question to Docker: {' '.join(arguments)!r}")


async def _answer(arguments: Sequence[str]) -> Any:
    import aiodocker

    question, asking = _question(arguments)
    docker = _engine()
    try:
        async with asyncio.timeout(ENGINE_SECONDS[question]):
            return await asking(docker)
    except TimeoutError:
        raise ProbeError(
            f"the Docker engine did not answer in {ENGINE_SECONDS[question]:g} s: is it hung?"
        ) from None
    except aiodocker.DockerError as error:
        raise ProbeError(_cannot_connect(error)) from None
    finally:
        await docker.close()


async def _images(docker: aiodocker.Docker) -> list[str]:
    images = await docker.images.list()
    tags = {
        tag
        for image in images
        for tag in (image.get("RepoTags") or [])
        if isinstance(tag, str) and tag != "<none>:<none>"
    }
    return sorted(tags)[:IMAGES]  # what the coordinator's edge admits


async def _remove_leftovers(docker: aiodocker.Docker, owner: str) -> dict[str, Any]:
    import aiodocker

    from daemon.runtime.docker import OWNER_LABEL

    leftovers = await docker.containers.list(
        all=True, filters={"label": [f"{OWNER_LABEL}={owner}"]}
    )
    failed: list[str] = []
    for container in leftovers:
        try:
            await container.delete(force=True)
        except aiodocker.DockerError as error:
            if error.status != 404:  # gone already is removed
                failed.append(f"{container.id[:12]}: {error.message}")
    return {"found": len(leftovers), "failed": failed}


def main(arguments: Sequence[str]) -> int:
    try:
        said: dict[str, Any] = {"answer": asyncio.run(_answer(arguments))}
    except ProbeError as error:
        said = {"error": str(error)}
    sys.stdout.write(json.dumps(said) + "\n")
    sys.stdout.flush()
    return 0 if "answer" in said else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
