"""Long-lived background tasks that cannot end in silence.

A task started with `create_task` and left alone dies unseen: its exception waits in the
task object until someone looks, and no one does. Every role starts its long-lived work
through a `Supervisor` instead, which keeps a reference to each task, names it, and when one
ends by an exception logs it and hands it on: by default to the node's fatal handler (the
node stops, exits non-zero and says why, and its service manager may restart it), or to a
handler of the caller's that ends only what the task was for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from daemon.errors import NodeError

log = logging.getLogger(__name__)

T = TypeVar("T")
CrashHandler = Callable[[BaseException], None]


class Supervisor:
    def __init__(self, on_fatal: Callable[[NodeError], None]) -> None:
        self._on_fatal = on_fatal
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(
        self,
        coroutine: Coroutine[Any, Any, T],
        name: str,
        on_crash: CrashHandler | None = None,
    ) -> asyncio.Task[T]:
        """Starts `coroutine` as the task `name`. Should it raise, the error is logged and
        given to `on_crash`, or without one, to the node's fatal handler."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda ended: self._ended(ended, on_crash))
        return task

    def _ended(self, task: asyncio.Task[Any], on_crash: CrashHandler | None) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        name = task.get_name()
        if isinstance(error, NodeError):  # says what went wrong in words: no traceback
            log.error("%s stopped: %s", name, error)
        else:
            log.error("%s crashed", name, exc_info=error)
        if on_crash is not None:
            on_crash(error)
        elif isinstance(error, NodeError):
            self._on_fatal(error)
        else:
            self._on_fatal(NodeError(f"{name} crashed: {error!r}"))

    def __len__(self) -> int:
        """How many tasks it keeps: those not ended yet."""
        return len(self._tasks)

    async def cancel(self, *tasks: asyncio.Task[Any]) -> None:
        """Cancels `tasks` and waits until they have ended (what they raised was reported)."""
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def stop(self) -> None:
        """Cancels every task still running and waits for all of them."""
        await self.cancel(*self._tasks)


async def run_together(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Runs `coroutines` side by side until the first of them ends, then cancels the others
    and waits for them; raises what that first one raised. For work that makes sense only
    together (a stream's reader and its heartbeats), so that neither goes on alone once the
    other has died."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in tasks:
        if task in done:
            task.result()
