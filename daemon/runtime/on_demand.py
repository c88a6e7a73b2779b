"""The Docker runtime of a volunteer, with aiodocker imported by the first task that needs it.

aiodocker brings aiohttp (~14 MiB a process never gives back): a volunteer that only waits
for work asks Docker what it needs in a child process instead (daemon/runtime/probe.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from daemon.runtime import probe
from daemon.runtime.spec import (
    OutputCallback,
    ProgressCallback,
    RunResult,
    RunSpec,
    StartedCallback,
)

if TYPE_CHECKING:
    from daemon.runtime.docker import DockerRuntime


class DockerOnDemand:
    """DockerRuntime, made (and aiodocker imported) when a task first needs it; the removal
    of a killed run's containers, at start, is asked in a child process."""

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
        over for the pool (the tasks went elsewhere), and nobody would enforce their timeout.
        How many there were; ProbeError when Docker could not be asked."""
        if not self._owner:
            return 0
        return await probe.remove_leftovers(self._owner)

    async def image_id(self, image: str) -> str | None:
        return await self.runtime.image_id(image)

    async def pull_image(self, image: str) -> None:
        await self.runtime.pull_image(image)

    async def load_image(self, archive: Path, image_id: str, scratch: Path) -> None:
        await self.runtime.load_image(archive, image_id, scratch)

    async def run(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        on_output: OutputCallback | None = None,
        *,
        on_started: StartedCallback | None = None,
    ) -> RunResult:
        return await self.runtime.run(spec, on_progress, on_output, on_started=on_started)

    async def freeze(self, run_id: str) -> bool:
        # No runtime made yet: no task ran, so none runs (and aiodocker stays unimported).
        return self._runtime is not None and await self._runtime.freeze(run_id)

    async def thaw(self, run_id: str) -> bool:
        return self._runtime is not None and await self._runtime.thaw(run_id)

    async def close(self) -> None:
        if self._runtime is not None:
            await self._runtime.close()
