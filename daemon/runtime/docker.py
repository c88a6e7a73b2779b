"""Tasks in locked-down Docker containers, through aiodocker.

Defaults are the safest that still run a task: no network unless asked (and allowed),
read-only root with a small tmpfs /tmp, every capability dropped, no-new-privileges, user
nobody, memory (without swap), CPU and pids limits, a wall-clock timeout, and the
container always removed. Only /input (read-only) and /output of the host are visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

from daemon.runtime.image_archive import untagged_copy
from daemon.runtime.spec import (
    LiveRun,
    LiveRuns,
    LogBuffer,
    OutputCallback,
    OutputWatch,
    ProgressCallback,
    RunResult,
    RunSpec,
    StartedCallback,
    failure_for_exit,
    tail,
)
from daemon.runtime.usage import UsageMeter, find_usage_files, read_usage

log = logging.getLogger(__name__)

MIB = 1024 * 1024
SIGKILL_EXIT = 128 + 9
NOBODY = "65534:65534"
# The label a volunteer's containers carry: its id (removed by its next start if it is killed,
# daemon/runtime/probe.py).
OWNER_LABEL = "vcnode.volunteer"
EXPORT_CHUNK_BYTES = 1 << 20
# A whole image over a slow link; a registry that answers nothing is given up on.
PULL_TIMEOUT_SECONDS = 1800.0
# When a running container's output starts being relayed (`vcnode logs -f`).
FOLLOW_AFTER_SECONDS = 1.0
# How often a running container's CPU time and memory are read (they are gone once it exits).
USAGE_POLL_SECONDS = 1.0


class ImageMissingError(Exception):
    pass


class PullError(Exception):
    """A registry did not give us the image; the message says why, in Docker's words."""


def container_config(spec: RunSpec, owner: str = "") -> dict[str, Any]:
    """The Docker create request for a task (pure, so the lockdown itself is testable).
    `owner` labels the container with the volunteer that runs it."""
    memory = spec.memory_mb * MIB
    return {
        "Image": spec.image,
        "Cmd": list(spec.command),
        "User": NOBODY,
        "WorkingDir": "/tmp",
        "Env": [
            "VCNODE_INPUT=/input",
            "VCNODE_OUTPUT=/output",
            *(f"{key}={value}" for key, value in spec.env.items()),
        ],
        "NetworkDisabled": not spec.network,
        "Labels": {"vcnode.run": spec.run_id, OWNER_LABEL: owner},
        "HostConfig": {
            "Binds": [f"{spec.input_dir}:/input:ro", f"{spec.output_dir}:/output:rw"],
            "ReadonlyRootfs": True,
            "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={spec.tmp_mb}m"},
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            "Memory": memory,
            "MemorySwap": memory,  # equal to Memory: no swap on the volunteer's disk
            "NanoCpus": int(spec.cpus * 1e9),
            "PidsLimit": spec.pids_limit,
            "NetworkMode": "bridge" if spec.network else "none",
            "Init": False,
            # A task writing without end must not fill the owner's disk through Docker's
            # log: two files of 8 MiB at most, enough for the last LOG_BYTES we keep.
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "8m", "max-file": "2"}},
        },
    }


async def _log(container: Any, **stream: bool) -> LogBuffer:
    """One of a stopped container's streams, its last LOG_BYTES (Docker keeps 16 MiB)."""
    buffer = LogBuffer()
    for line in await container.log(**stream):
        buffer.append(line.encode("utf-8", "surrogateescape"))
    return buffer


async def _follow(container: Any, on_output: OutputCallback, name: str) -> None:
    """Tells what the running container writes to stream `name`, as Docker relays it (and
    decodes it, as `_log` reads it after: the same bytes), until it stops. A log that cannot
    be followed is no failure of the task: `_log` still reads it whole."""
    # A period, not a wait: Docker relays a followed log from its start, so a container that
    # ends within it costs no stream at all (its result carries what it wrote).
    await asyncio.sleep(FOLLOW_AFTER_SECONDS)
    try:
        async for text in container.log(follow=True, **{name: True}):
            if text:
                on_output(name, text.encode("utf-8", "surrogateescape"))
    except (aiodocker.DockerError, aiohttp.ClientError, OSError, ValueError) as error:
        log.debug("stopped following the %s of %s: %s", name, container.id, error)


async def _measure(container_id: str, meter: UsageMeter) -> None:
    """Reads a running container's figures into `meter` once a second, until cancelled or
    its cgroup is gone; never at all when it cannot be found (the figures stay unknown)."""
    meter.files = await asyncio.to_thread(find_usage_files, container_id)
    if not meter.files.found:
        log.debug("no cgroup found for container %s: its usage stays unknown", container_id)
        return
    while (reading := await asyncio.to_thread(read_usage, meter.files)) is not None:
        meter.add(reading)
        await asyncio.sleep(USAGE_POLL_SECONDS)


async def _last_measure(measuring: asyncio.Task[None], meter: UsageMeter) -> None:
    """Stops the once-a-second reads and reads once more, if the cgroup is still there."""
    measuring.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await measuring
    if meter.files.found and (reading := await asyncio.to_thread(read_usage, meter.files)):
        meter.add(reading)


async def _set_paused(container: Any, paused: bool) -> bool:
    """Pauses (or unpauses) a container; True if it is running and paused (or not) as
    asked now. A container that exited, was removed or was already so as we asked is no
    error: Docker's word for it (409, 404, or 500 "not paused") is checked against its
    state."""
    try:
        await (container.pause() if paused else container.unpause())
        return True
    except aiodocker.DockerError as error:
        log.debug("%s %s: %s", "pausing" if paused else "unpausing", container.id, error)
    try:
        state = (await container.show())["State"]
    except aiodocker.DockerError:
        return False
    return bool(state.get("Running")) and bool(state.get("Paused")) == paused


class DockerRuntime:
    name = "docker"
    isolated = True

    def __init__(self, owner: str = "") -> None:
        """`owner`: the volunteer id its containers are labelled with."""
        self._owner = owner
        self._docker: aiodocker.Docker | None = None
        # Runs in progress whose container is up, by run id.
        self._live: LiveRuns[Any] = LiveRuns()

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker()
        return self._docker

    async def image_id(self, image: str) -> str | None:
        try:
            found = await self._client().images.inspect(image)
        except aiodocker.DockerError as error:
            if error.status == 404:
                return None
            raise
        return str(found["Id"])

    async def remove_leftovers(self) -> int:
        """Removes containers this volunteer left behind when it was killed: their runs are
        over for the pool (the tasks went elsewhere), and nobody would enforce their timeout."""
        if not self._owner:
            return 0
        leftovers = await self._client().containers.list(
            all=True, filters={"label": [f"{OWNER_LABEL}={self._owner}"]}
        )
        for container in leftovers:
            await self._remove(container)
        return len(leftovers)

    async def export_image(self, image: str, target: Path) -> str:
        """Writes `docker save IMAGE` to `target`; returns the image's ID."""
        image_id = await self.image_id(image)
        if image_id is None:
            raise ImageMissingError(f"image {image} is not here to export")
        with target.open("wb") as archive:
            async with self._client().images.export_image(image) as stream:
                while chunk := await stream.read(EXPORT_CHUNK_BYTES):
                    await asyncio.to_thread(archive.write, chunk)
        return image_id

    async def pull_image(self, image: str) -> None:
        """`docker pull IMAGE` (a tag or a digest reference), from the registry it names."""
        try:
            # Tags travel inside the reference: the Engine API takes `name:tag` and
            # `name@sha256:...` as they are.
            progress = await self._client().images.pull(image, timeout=PULL_TIMEOUT_SECONDS)
        except aiodocker.DockerError as error:
            raise PullError(f"pulling {image} failed: {error.message}") from None
        except TimeoutError:
            raise PullError(f"pulling {image} took over {PULL_TIMEOUT_SECONDS:g} s") from None
        # A pull that fails midway still answers 200, with the error in its progress.
        failed = [
            step["error"] for step in progress or [] if isinstance(step, dict) and step.get("error")
        ]
        if failed:
            raise PullError(f"pulling {image} failed: {failed[-1]}")

    async def load_image(self, archive: Path, image_id: str, scratch: Path) -> None:
        """`docker load` of image `image_id` from an archive another node exported, with its
        tags taken out (a copy in `scratch`): no tag on this host moves. Raises
        ImageArchiveError when the archive is not that one image."""
        await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
        copy = scratch / f"{image_id.replace(':', '-')}.tar"
        try:
            await asyncio.to_thread(untagged_copy, archive, image_id, copy)
            with copy.open("rb") as data:
                await self._client().images.import_image(data=data)
        finally:
            await asyncio.to_thread(copy.unlink, True)

    async def freeze(self, run_id: str) -> bool:
        """`docker pause` of the run's container; its timeout stands still meanwhile."""
        return await self._live.freeze(run_id, lambda c: _set_paused(c, paused=True))

    async def thaw(self, run_id: str) -> bool:
        """`docker unpause` of the run's container; its timeout runs on, moved by the time
        it was frozen."""
        return await self._live.thaw(run_id, lambda c: _set_paused(c, paused=False))

    async def run(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        on_output: OutputCallback | None = None,
        *,
        on_started: StartedCallback | None = None,
    ) -> RunResult:
        try:
            container = await self._client().containers.create(
                config=container_config(spec, self._owner), name=f"vcnode-{spec.run_id}"
            )
        except aiodocker.DockerError as error:
            if error.status == 404:
                raise ImageMissingError(f"image {spec.image} is not on this volunteer") from None
            raise
        started_at = time.time()

        async def stop() -> None:
            with contextlib.suppress(aiodocker.DockerError):
                await container.kill()

        watch = OutputWatch(spec, on_progress, stop)
        loop = asyncio.get_running_loop()
        progress = loop.create_task(watch.run())
        following: list[asyncio.Task[None]] = []
        meter = UsageMeter()
        measuring: asyncio.Task[None] | None = None
        live: LiveRun[Any] | None = None
        try:
            await container.start()
            live = self._live.add(spec.run_id, container)
            measuring = loop.create_task(_measure(container.id, meter))
            if on_started is not None:
                on_started()
            if on_output is not None:
                following = [
                    loop.create_task(_follow(container, on_output, name))
                    for name in ("stdout", "stderr")
                ]
            failure = ""
            exit_code: int | None = None
            try:
                async with asyncio.timeout(spec.timeout_seconds) as timeout:
                    with live.deadline.governing(timeout):
                        exit_code = (await container.wait()).get("StatusCode")
            except TimeoutError:
                await stop()
                failure = f"timed out after {spec.timeout_seconds:g} s (killed)"
            self._live.remove(spec.run_id, live)
            await _last_measure(measuring, meter)
            await watch.check_after_exit()
            failure = watch.overflow or failure
            finished_at = time.time()
            if exit_code != 0:
                # Only a failure needs the details (the code after a kill, whether memory ran
                # out): a task that succeeded saves a Docker call in its slot.
                state = await _final_state(container, oom_possible=not failure)
                exit_code = state.get("ExitCode")
                if not failure and state.get("OOMKilled"):
                    failure = (
                        f"out of memory: needed more than its {spec.memory_mb} MiB limit (killed)"
                    )
            stdout = await _log(container, stdout=True)
            stderr = await _log(container, stderr=True)
            failure = failure or failure_for_exit(exit_code, stderr.content)
            return RunResult(
                exit_code=exit_code,
                failure=failure,
                stdout_tail=tail(stdout.content),
                stderr_tail=tail(stderr.content),
                started_at=started_at,
                finished_at=finished_at,
                stdout=stdout.content,
                stderr=stderr.content,
                stdout_cut=stdout.cut,
                stderr_cut=stderr.cut,
                cpu_seconds=meter.cpu_seconds,
                peak_memory_mb=meter.peak_memory_mb,
            )
        finally:
            if live is not None:
                self._live.remove(spec.run_id, live)
            # What the followers had not relayed yet is in the stored log (`_log`).
            running = [task for task in (progress, measuring, *following) if task is not None]
            for task in running:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Shielded: a cancelled task must still not leave its container behind.
            await asyncio.shield(self._remove(container))

    @staticmethod
    async def _remove(container: Any) -> None:
        try:
            await container.delete(force=True)
        except aiodocker.DockerError as error:
            if error.status != 404:
                log.warning("could not remove container %s: %s", container.id, error)

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None


# Docker may record an OOM kill a moment after the exit it caused (its OOM event and its
# exit event race): a SIGKILL we did not send is looked at again for that long.
OOM_RECORD_SECONDS = 2.0


async def _final_state(container: Any, oom_possible: bool) -> dict[str, Any]:
    """The container's state once it exited; `oom_possible` False when we killed it."""
    state: dict[str, Any] = (await container.show())["State"]
    deadline = time.monotonic() + OOM_RECORD_SECONDS
    while oom_possible and state.get("ExitCode") == SIGKILL_EXIT and not state.get("OOMKilled"):
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)  # polls Docker's record, with a deadline
        state = (await container.show())["State"]
    return state
