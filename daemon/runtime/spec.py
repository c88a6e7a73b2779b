"""What a runtime is asked to run, and what it reports back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from daemon.task_files import PROGRESS_FILE

MIB = 1024 * 1024
TAIL_BYTES = 8192
PROGRESS_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    image: str
    command: tuple[str, ...]
    # Mounted read-only at /input and writable at /output; nothing else of the host.
    input_dir: Path
    output_dir: Path
    cpus: float
    memory_mb: int
    timeout_seconds: float
    network: bool = False
    pids_limit: int = 256
    tmp_mb: int = 64
    # What the task may write to /output; past it the task is stopped (0: no cap).
    output_mb: int = 0
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None
    # Empty on success; otherwise why, in words a person can act on.
    failure: str
    stdout_tail: str
    stderr_tail: str
    started_at: float
    finished_at: float
    # What the task wrote, its last LOG_BYTES of each; `*_cut` when more came before.
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_cut: bool = False
    stderr_cut: bool = False
    # What the task used (`vcnode history`); None when the runtime could not tell.
    cpu_seconds: float | None = None
    peak_memory_mb: float | None = None

    @property
    def succeeded(self) -> bool:
        return not self.failure


ProgressCallback = Callable[[float], None]
# Told each piece a running task writes, as it comes: ("stdout" or "stderr", its bytes).
OutputCallback = Callable[[str, bytes], None]
# Told once the task is up: from then on until it ends, `freeze` and `thaw` reach it.
StartedCallback = Callable[[], None]


@dataclass(frozen=True)
class LogChunk:
    """Bytes a running task wrote to one stream (`vcnode logs -f`), from `offset` on: how
    much it had written to that stream before."""

    stream: str
    offset: int
    data: bytes


class Runtime(Protocol):
    name: str
    # False for the process runtime: every place that shows the volunteer must say so.
    isolated: bool

    async def run(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        on_output: OutputCallback | None = None,
        *,
        on_started: StartedCallback | None = None,
    ) -> RunResult:
        """Runs to completion (or timeout); cancelling the caller stops the run, frozen or
        not. With `on_output`, what the task writes is told as it comes, too. Time the run
        spends frozen does not count against its timeout."""
        ...

    async def freeze(self, run_id: str) -> bool:
        """Freezes the running task of that `RunSpec.run_id` (the owner wants their machine
        back for a while). True if it is frozen now (or already was); False if no such run
        is in progress: not started yet, or ended. Safe to call at any moment."""
        ...

    async def thaw(self, run_id: str) -> bool:
        """Lets a frozen task run on. True if it runs now (or never was frozen); False if
        no such run is in progress."""
        ...


class FreezableDeadline:
    """A run's wall-clock timeout that stands still while the run is frozen: the time it
    was held is added to it on thaw, so a task is not killed for the owner's pause."""

    def __init__(self) -> None:
        self._timeout: asyncio.Timeout | None = None
        self.frozen = False
        # While held: when it was due, and since when it is held (loop time).
        self._held: tuple[float, float] | None = None

    @contextlib.contextmanager
    def governing(self, timeout: asyncio.Timeout) -> Iterator[None]:
        """Within the block, `freeze` and `thaw` move `timeout` (an entered one)."""
        self._timeout = timeout
        if self.frozen:  # frozen before its clock started
            self._hold()
        try:
            yield
        finally:
            self._timeout = None
            self._held = None

    def freeze(self) -> None:
        if not self.frozen:
            self.frozen = True
            self._hold()

    def thaw(self) -> None:
        if not self.frozen:
            return
        self.frozen = False
        held, self._held = self._held, None
        if held is None or not self._movable(self._timeout):
            return
        due, since = held
        assert self._timeout is not None
        self._timeout.reschedule(due + asyncio.get_running_loop().time() - since)

    def _hold(self) -> None:
        timeout = self._timeout
        if not self._movable(timeout) or self._held is not None:
            return
        assert timeout is not None
        due = timeout.when()
        if due is None:
            return
        self._held = (due, asyncio.get_running_loop().time())
        timeout.reschedule(None)

    @staticmethod
    def _movable(timeout: asyncio.Timeout | None) -> bool:
        # An expired timeout is already cancelling the run: too late to hold it.
        return timeout is not None and not timeout.expired()


Handle = TypeVar("Handle")


@dataclass
class LiveRun(Generic[Handle]):
    """A run whose task is up (its container, its process): what freeze and thaw act on."""

    handle: Handle
    deadline: FreezableDeadline = field(default_factory=FreezableDeadline)
    # One freeze or thaw at a time: their calls must not cross.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LiveRuns(Generic[Handle]):
    """A runtime's runs in progress, by run id, and freezing and thawing them: shielded (a
    caller cancelled midway must not leave a frozen task whose timeout still runs), one at
    a time per run, and a run that ended meanwhile is left alone."""

    def __init__(self) -> None:
        self._live: dict[str, LiveRun[Handle]] = {}

    def add(self, run_id: str, handle: Handle) -> LiveRun[Handle]:
        live = LiveRun(handle)
        self._live[run_id] = live
        return live

    def remove(self, run_id: str, live: LiveRun[Handle]) -> None:
        if self._live.get(run_id) is live:
            del self._live[run_id]

    async def freeze(self, run_id: str, stop: Callable[[Handle], Awaitable[bool]]) -> bool:
        """`stop(handle)` freezes the task (False: it ended); its timeout stands still."""
        live = self._live.get(run_id)
        if live is None:
            return False
        return await asyncio.shield(self._freeze(run_id, live, stop))

    async def _freeze(
        self, run_id: str, live: LiveRun[Handle], stop: Callable[[Handle], Awaitable[bool]]
    ) -> bool:
        async with live.lock:
            if self._live.get(run_id) is not live:
                return False  # it ended while we waited for the lock
            if live.deadline.frozen:
                return True
            if not await stop(live.handle):
                return False
            live.deadline.freeze()
            return True

    async def thaw(self, run_id: str, go_on: Callable[[Handle], Awaitable[bool]]) -> bool:
        """`go_on(handle)` lets the task run on; its timeout runs on, moved by the time it
        was frozen."""
        live = self._live.get(run_id)
        if live is None:
            return False
        return await asyncio.shield(self._thaw(run_id, live, go_on))

    async def _thaw(
        self, run_id: str, live: LiveRun[Handle], go_on: Callable[[Handle], Awaitable[bool]]
    ) -> bool:
        async with live.lock:
            if self._live.get(run_id) is not live:
                return False
            if not live.deadline.frozen:
                return True
            thawed = await go_on(live.handle)
            # Its clock runs again even when the task would not go on: one stuck frozen must
            # still meet its timeout rather than hold its slot for ever.
            live.deadline.thaw()
            return thawed


# The stderr line said with a failure is cut to this many characters.
FAILURE_LINE_CHARS = 200
# What a task's stdout and stderr keep each, their end (where the failure is): the
# volunteer sends them to the manager with the result (`vcnode logs`).
LOG_BYTES = 8 * 1024 * 1024


# Words of a line that says what went wrong (lower case).
_TELLING = ("error", "unable to", "cannot", "can't", "no such file", "not found", "fatal")
# A quoted name or a path: what a line that names the culprit has. OpenMalaria's first line,
# "XSD error: instance document parsing failed", only says that something went wrong; the
# next, "... unable to open primary document entity '/om/scenario_48.xsd'", says what.
_NAMES = re.compile(r"'[^']+'|\"[^\"]+\"|(?:^|[\s:=(])\.{0,2}/[\w.-]")


def telling_line(stderr: bytes | str) -> str:
    """The stderr line most likely to say why a task failed: of the lines that speak of an
    error, the first that names a file or value, else the first (the cause, before what it
    led to), else the last line (a Python exception, `sys.exit("...")`); "" for none."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    telling = [line for line in lines if any(word in line.lower() for word in _TELLING)]
    line = next(
        (line for line in telling if _NAMES.search(line)), telling[0] if telling else lines[-1]
    )
    return line if len(line) <= FAILURE_LINE_CHARS else line[: FAILURE_LINE_CHARS - 1] + "…"


def failure_for_exit(exit_code: int | None, stderr: bytes | str = b"") -> str:
    """Why a task that ended by itself failed, with its most telling stderr line."""
    if exit_code == 0:
        return ""
    reason = "did not exit" if exit_code is None else f"exited with code {exit_code}"
    line = telling_line(stderr)
    return f"{reason}: {line}" if line else reason


class LogBuffer:
    """The last `limit` bytes of a stream read in chunks, and whether more came before;
    it never holds more than twice the limit."""

    def __init__(self, limit: int = LOG_BYTES) -> None:
        self._limit = limit
        self._data = bytearray()
        self.cut = False

    def append(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > 2 * self._limit:
            del self._data[: len(self._data) - self._limit]
            self.cut = True

    @property
    def content(self) -> bytes:
        if len(self._data) > self._limit:
            self.cut = True
            return bytes(self._data[-self._limit :])
        return bytes(self._data)


def tail(text: bytes | str, limit: int = TAIL_BYTES) -> str:
    data = text.encode() if isinstance(text, str) else text
    return data[-limit:].decode("utf-8", errors="replace")


PROGRESS_BYTES = 64  # "100" needs 3; the rest is the task's business


def read_progress(output_dir: Path) -> float | None:
    """The task's own progress, 0-100, from /output/.progress; None if absent or garbled.
    The task made that file: it may be a link (to /dev/zero, say) or a FIFO, so only a
    regular file is read, and only its first bytes."""
    try:
        fd = os.open(output_dir / PROGRESS_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, PROGRESS_BYTES).decode("utf-8", errors="replace")
        value = float(text.strip().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(fd)
    return min(100.0, max(0.0, value))


def written_bytes(output_dir: Path) -> int:
    """What the task wrote under `output_dir`, links not followed."""
    total = 0
    pending = [output_dir]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue  # gone or unreadable as we looked: the task's business
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


class OutputWatch:
    """Watches a running task's /output: reports each new progress value it writes, and
    stops the task (`stop`) once it has written more than `spec.output_mb`."""

    def __init__(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        stop: Callable[[], Awaitable[None]],
        also: tuple[Path, ...] = (),
    ) -> None:
        """`also`: directories counted with /output against the cap (the task's /tmp when
        it is on disk)."""
        self._spec = spec
        self._on_progress = on_progress
        self._stop = stop
        self._dirs = (spec.output_dir, *also)
        self.overflow = ""  # why it stopped the task, if it did

    async def run(self) -> None:
        """Until cancelled, or until it stopped the task."""
        last: float | None = None
        while True:
            await asyncio.sleep(PROGRESS_POLL_SECONDS)
            value, written = await asyncio.to_thread(self._look)
            if value is not None and value != last:
                last = value
                self._on_progress(value)
            if self._over(written):
                await self._stop()
                return

    async def check_after_exit(self) -> None:
        """One last look once the task ended: it may have written past its cap between
        two looks (a sparse file, at its last moment) and exited."""
        if self._spec.output_mb and not self.overflow:
            self._over(await asyncio.to_thread(self._written))

    def _over(self, written: int) -> bool:
        if not self._spec.output_mb or written <= self._spec.output_mb * MIB:
            return False
        self.overflow = (
            f"wrote more than its {self._spec.output_mb} MiB of output{self._and_scratch} "
            f"({written / MIB:.0f} MiB; stopped)"
        )
        return True

    def _look(self) -> tuple[float | None, int]:
        written = self._written() if self._spec.output_mb else 0
        return read_progress(self._spec.output_dir), written

    @property
    def _and_scratch(self) -> str:
        return " and /tmp" if len(self._dirs) > 1 else ""

    def _written(self) -> int:
        return sum(written_bytes(directory) for directory in self._dirs)
