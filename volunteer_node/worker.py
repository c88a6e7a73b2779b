"""Runs the tasks a volunteer accepts: fetch inputs, run, upload outputs, report. Small
inputs come inside the offer and small outputs go inside the result (daemon/inline.py).

What to do and when is decided by the volunteer's lifecycle, a pure state machine
(volunteer_node/lifecycle.py); this module is its I/O shell. One asyncio task (a pipeline)
per accepted offer, kept in `_pipelines` until it ends; when the lifecycle calls an attempt
off, its pipeline is cancelled, and the runtime then kills and removes the container.
Results go to the store's outbox before they are sent, and stay there until the
coordinator acknowledges them, so neither a broken stream nor a restart loses one.

Everything a peer names is checked before it touches the disk: input and output names are
plain file names, and outputs are read only if they are regular files (a task could leave a
symlink to anything on the host in /output).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from daemon import inline
from daemon.backoff import Backoff
from daemon.errors import NodeError, UnreachableError
from daemon.models import FileRef, InlineBlob, OwnerLimits, Resources, TaskResult, TaskSpec
from daemon.runtime.spec import LOG_BYTES, RunResult, RunSpec, Runtime
from daemon.task_files import LOG_PURPOSE, PROGRESS_FILE, file_name_problem
from volunteer_node.blobs import ManagerPeer
from volunteer_node.history import Outcome, RanTask
from volunteer_node.lifecycle import (
    DEFAULT_HOLD_GRACE_SECONDS,
    OWNER_HOLD,
    AttemptKey,
    CallOff,
    Fetch,
    Freeze,
    Hold,
    Instruction,
    LifecycleView,
    Run,
    SaveAccepted,
    SaveAcknowledged,
    SaveCalledOff,
    SaveOwnerState,
    SaveReady,
    SaveResult,
    SendAccept,
    SendAvailability,
    SendDecline,
    SendResult,
    SendStarted,
    Thaw,
    VolunteerLifecycle,
)
from volunteer_node.live_logs import LogPush, PushLog, pushing
from volunteer_node.policy import Situation, decline_reason
from volunteer_node.store import AttemptState, VolunteerStore

log = logging.getLogger(__name__)

UPLOAD_RETRY_MAX_SECONDS = 30.0
# The least share of a CPU a container may be given (Docker: 1 ms of each 100 ms period).
MIN_CPUS = 0.01
# A container Docker does not freeze or thaw within this is left as it is, and said so.
FREEZE_TIMEOUT_SECONDS = 30.0
# How often a wait for a wall-clock deadline (a pause's end) looks at the clock again.
WALL_CLOCK_CHECK_SECONDS = 60.0
UPLOAD_PATIENCE_SECONDS = 30 * 60.0


class Transfers(Protocol):
    """Moves blobs between this volunteer and a manager."""

    def fetched(
        self, manager: ManagerPeer, ref: FileRef
    ) -> contextlib.AbstractAsyncContextManager[Path]:
        """A verified local copy of the blob (from the cache when held already), kept in
        place until the block ends."""
        ...

    async def send(self, manager: ManagerPeer, path: Path, purpose: str) -> FileRef:
        """Uploads a file; returns its name, sha256 and size as the manager verified them."""
        ...

    async def image_archive(self, manager: ManagerPeer, image: str, image_id: str) -> FileRef:
        """Asks the manager to export a task's image; returns the archive blob to fetch."""
        ...


class Reporter(Protocol):
    """The coordinator link, as far as the worker is concerned."""

    def send_accept(self, task_id: str, attempt: int) -> None:
        """We hold the task: it is `fetching` until send_started."""

    def send_started(self, task_id: str, attempt: int) -> None:
        """Its container started (see RunningWord): it is `running`."""

    def send_decline(self, task_id: str, attempt: int, reason: str) -> None: ...

    def send_progress(self, task_id: str, attempt: int, percent: float) -> None: ...

    def send_result(self, result: TaskResult) -> None: ...

    def send_heartbeat(self) -> None:
        """Now: whether we take tasks changed (see SendAvailability)."""


class TaskFailedError(Exception):
    """A step failed in a way that ends this attempt; the message is for the user."""


def check_file_name(name: str, what: str) -> str:
    if (problem := file_name_problem(name)) is not None:
        raise TaskFailedError(f"{what} name {name!r} {problem}")
    return name


def run_id(task: TaskSpec) -> str:
    """A name for this attempt that is safe as a path component and a container name,
    whatever a peer put in the task id, and still unique (a digest of the original)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", task.task_id)[:80].lstrip(".-_") or "task"
    digest = hashlib.sha256(f"{task.task_id}\0{task.attempt}".encode()).hexdigest()[:10]
    return f"{readable}.{task.attempt}-{digest}"


def regular_file(directory: Path, name: str) -> Path | None:
    """The file if it is a regular file right in `directory` (not a symlink), else None."""
    path = directory / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return path if stat.S_ISREG(info.st_mode) else None


@dataclass(frozen=True)
class WorkerConfig:
    tasks_dir: Path
    limits: OwnerLimits
    # How long a task's outputs wait for a manager nobody can reach before the attempt
    # fails (and the task runs again elsewhere, or fails for good, with that reason).
    upload_patience_seconds: float = UPLOAD_PATIENCE_SECONDS
    # How long a pause (or an owner's rule) may freeze tasks before they are handed back.
    hold_grace_seconds: float = DEFAULT_HOLD_GRACE_SECONDS


class TaskWorker:
    """The I/O shell of the volunteer's lifecycle (volunteer_node/lifecycle.py): turns what
    the coordinator, each attempt's pipeline and the owner say into stimuli, and carries out
    the instructions that come back, one batch at a time, in order."""

    def __init__(
        self,
        config: WorkerConfig,
        store: VolunteerStore,
        transfers: Transfers,
        runtime: Runtime | None,
        resources: Callable[[], Resources],
        image_id: Callable[[str], Awaitable[str | None]],
        load_image: Callable[[Path, str], Awaitable[None]] | None = None,
        pull_image: Callable[[str], Awaitable[None]] | None = None,
        push_log: Callable[[ManagerPeer, LogPush], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`push_log`: sends a running task's new output to its manager (see live_logs)."""
        self._config = config
        self._store = store
        self._transfers = transfers
        self._runtime = runtime
        self._resources = resources
        self._image_id = image_id
        self._load_image = load_image
        self._pull_image = pull_image
        self._push_log = push_log
        self._clock = clock
        # One image load at a time: two tasks of a new image must not both load it.
        self._image_lock = asyncio.Lock()
        self._reporter: Reporter | None = None
        self._machine = VolunteerLifecycle(
            config.limits, hold_grace_seconds=config.hold_grace_seconds
        )
        # Instructions are carried out by one task, a batch at a time, in the order the
        # stimuli came (a thaw must never overtake the freeze before it), and whole even
        # when whoever caused them is cancelled (an owner's Ctrl-C): the lifecycle has
        # moved on already, and what it said must happen.
        self._batches: asyncio.Queue[tuple[list[Instruction], asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self._carrying: asyncio.Task[None] | None = None
        self._pending = 0  # batches queued or being carried out
        self._stopped = False
        self._pipelines: dict[AttemptKey, asyncio.Task[None]] = {}
        # Set by `Run`: the attempt's turn to start its container.
        self._turns: dict[AttemptKey, asyncio.Event] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._ticks: set[asyncio.Task[None]] = set()
        # What each attempt in progress used, for its history record.
        self._ledgers: dict[AttemptKey, Ledger] = {}

    def attach(self, reporter: Reporter) -> None:
        self._reporter = reporter

    @property
    def reporter(self) -> Reporter:
        assert self._reporter is not None, "attach() a reporter first"
        return self._reporter

    async def open(self) -> None:
        abandoned = await self._store.abandon_unfinished()
        if abandoned:
            log.warning("%d task runs were cut short by a restart", abandoned)
        self._machine.restore(await self._store.unacknowledged_results())
        pause, draining = await self._store.owner_state()
        self._machine.restore_owner_state(pause, draining, self._clock())
        reason, _ = self._machine.availability()
        if reason:
            log.warning("as its owner left it: %s (`vcnode resume` ends it)", reason)

    def running_task_ids(self) -> tuple[str, ...]:
        """Tasks the coordinator should keep with us: held, or with a result in flight."""
        return self._machine.task_ids()

    def view(self) -> LifecycleView:
        return self._machine.view()

    def availability(self) -> tuple[str, float]:
        """Why no task is taken now ("" when tasks are), and until when (0: lifted)."""
        return self._machine.availability()

    # --- what the coordinator says ----------------------------------------------------------

    async def on_connected(self) -> None:
        # A coordinator that crashed between hearing that a task started and saving it
        # (or a word lost with the old stream) still has it `fetching`: said again, it is
        # `running` there too; said to a coordinator that knew, it changes nothing.
        await self._step(self._machine.connected())

    async def on_offer(self, task: TaskSpec) -> None:
        unfit = None if self._machine.refusal(task) else await self._unfit(task)
        await self._step(self._machine.offered(task, unfit))

    async def _unfit(self, task: TaskSpec, *, counting_it: bool = True) -> str | None:
        """Why the task cannot run here now (resources, limits, allow-lists, image);
        `counting_it` False for a task held already: how many are held is no reason then."""
        runtime_name = self._runtime.name if self._runtime else None
        image_id = await self._local_image(task) if runtime_name == "docker" else None
        situation = Situation(
            resources=self._resources(),
            limits=self._config.limits,
            running=self._machine.held_count() if counting_it else 0,
            runtime=runtime_name,
            image_id=image_id,
        )
        return decline_reason(task, situation)

    async def on_cancel(self, task_id: str, reason: str) -> None:
        await self._step(self._machine.cancel(task_id, reason))

    async def on_result_ack(self, task_id: str, attempt: int) -> None:
        await self._step(self._machine.acknowledged((task_id, attempt)))

    # --- what the owner says ----------------------------------------------------------------

    async def pause(self, seconds: float | None = None) -> None:
        """Freezes running tasks and takes no new ones, for `seconds` or until resumed."""
        now = self._clock()
        until = now + seconds if seconds is not None else math.inf
        reason = "paused by owner" + (f" until {_clock_time(until)}" if seconds else "")
        await self._step(self._machine.hold(Hold(OWNER_HOLD, reason, until, since=now)))

    async def hold(self, hold: Hold) -> None:
        """Stops work for one of the owner's rules (volunteer_node/rule_watch.py), as a
        pause does: running tasks freeze, offers are declined with `hold.reason`."""
        await self._step(self._machine.hold(hold))

    async def lift(self, name: str) -> None:
        """Ends the hold of that name; work goes on once no hold is left."""
        await self._step(self._machine.lift(name))

    async def reconfigure(self, limits: OwnerLimits, hold_grace_seconds: float) -> None:
        """The owner's limits or pause grace changed (a config reload): held tasks that
        have not started are checked again against the new limits (allow-lists, network,
        images, caps)."""
        self._config = replace(self._config, limits=limits, hold_grace_seconds=hold_grace_seconds)
        unfit: dict[AttemptKey, str] = {}
        for view in self._machine.view().attempts:
            attempt = self._machine.attempts.get((view.task_id, view.attempt))
            if attempt is None or view.phase not in ("fetching", "ready"):
                continue
            # Not its own place among those held: it holds one already.
            if (why := await self._unfit(attempt.task, counting_it=False)) is not None:
                unfit[attempt.key] = why
        await self._step(self._machine.reconfigure(limits, hold_grace_seconds, unfit))

    async def resume(self) -> None:
        await self._step(self._machine.resume())

    async def drain(self) -> None:
        await self._step(self._machine.drain())

    # --- carrying out -----------------------------------------------------------------------

    async def _step(self, instructions: list[Instruction]) -> None:
        """Has `instructions` carried out, in order after those before; returns once they
        were (a caller cancelled meanwhile stops waiting, not them)."""
        # Nothing to do still waits for what was asked before: a second `vcnode resume`
        # returns once the first one's thaw is done.
        if instructions or self._pending:
            done = asyncio.get_running_loop().create_future()
            self._pending += 1
            self._batches.put_nowait((instructions, done))
            if self._carrying is None:
                self._carrying = asyncio.get_running_loop().create_task(self._carry_forever())
            await asyncio.shield(done)
        self._arm_timer()

    async def _carry_forever(self) -> None:
        while True:
            instructions, done = await self._batches.get()
            freezing: list[Awaitable[None]] = []
            for instruction in instructions:
                if isinstance(instruction, Freeze | Thaw):
                    # Every container of one batch at once: a pause must be quick.
                    freezing.append(self._freeze(instruction))
                    continue
                try:
                    await self._carry_out(instruction)
                except Exception:  # one that fails (a full disk) must not skip the rest
                    log.exception("could not carry out %r", instruction)
            await asyncio.gather(*freezing)
            self._pending -= 1
            if not done.done():
                done.set_result(None)

    async def _carry_out(self, instruction: Instruction) -> None:
        match instruction:
            case SendAccept(key):
                self.reporter.send_accept(*key)
            case SendDecline(key, reason):
                log.info("declined %s (attempt %d): %s", *key, reason)
                self.reporter.send_decline(*key, reason)
            case SendStarted(key):
                self.reporter.send_started(*key)
            case SendResult(result):
                self.reporter.send_result(result)
            case Fetch(task):
                key = (task.task_id, task.attempt)
                self._turns[key] = asyncio.Event()
                self._ledgers[key] = Ledger(received_at=self._clock())
                pipeline = asyncio.get_running_loop().create_task(self._pipeline(task))
                self._pipelines[key] = pipeline
            case Run(key):
                if (turn := self._turns.get(key)) is not None:
                    turn.set()
            case CallOff(key, reason):
                log.info("calling off %s (attempt %d): %s", *key, reason)
                if (called_off := self._pipelines.get(key)) is not None:
                    called_off.cancel()
            case SaveAccepted(task):
                await self._store.record_task(task, AttemptState.ACCEPTED)
            case SaveReady(key):
                await self._store.set_state(key, AttemptState.READY)
            case SaveResult(result, manager_address):
                await self._store.save_result(result, manager_address)
            case SaveCalledOff(key, _reason, handed_back):
                state = AttemptState.HANDED_BACK if handed_back else AttemptState.CANCELLED
                await self._store.set_state(key, state)
            case SaveAcknowledged(key):
                await self._store.acknowledge(*key)
            case SaveOwnerState(pause, draining):
                await self._store.save_owner_state(pause, draining)
            case SendAvailability():
                self.reporter.send_heartbeat()

    async def _freeze(self, instruction: Freeze | Thaw) -> None:
        attempt = self._machine.attempts.get(instruction.key)
        if attempt is None or self._runtime is None:
            return
        name = run_id(attempt.task)
        what = type(instruction).__name__.lower()
        try:
            async with asyncio.timeout(FREEZE_TIMEOUT_SECONDS):
                if isinstance(instruction, Freeze):
                    # False: its container is not up yet; `container_started` freezes it then.
                    await self._runtime.freeze(name)
                else:
                    await self._runtime.thaw(name)
        except TimeoutError:
            log.error("could not %s task %s: no answer within %g s", what, name,
                      FREEZE_TIMEOUT_SECONDS)  # fmt: skip
        except Exception:  # a container we cannot freeze must not stop the volunteer
            log.exception("could not %s task %s", what, name)

    def _arm_timer(self) -> None:
        """Wakes `tick` when a hold ends or outlasts its grace; no timer while none is on
        (an idle volunteer wakes for nothing). Deadlines are wall-clock times and the
        loop's clock stops while the machine sleeps: a long wait wakes every minute to look
        at the wall clock again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._machine.next_deadline()
        if deadline is None or self._stopped:
            return
        loop = asyncio.get_running_loop()
        delay = min(max(0.0, deadline - self._clock()), WALL_CLOCK_CHECK_SECONDS)
        self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        tick = asyncio.get_running_loop().create_task(self._step(self._machine.tick(self._clock())))
        self._ticks.add(tick)
        tick.add_done_callback(self._ticks.discard)

    # --- one task ---------------------------------------------------------------------------

    async def _pipeline(self, task: TaskSpec) -> None:
        """One attempt, from fetching its inputs to its result; tells the lifecycle of each
        step, and that it is over however it ends (called off: cancelled)."""
        key = (task.task_id, task.attempt)
        workdir = self._config.tasks_dir / run_id(task)
        try:
            try:
                result = await self._attempt(task, workdir)
            except Exception as error:  # a bug here must still end the attempt with a result
                log.exception("task %s (attempt %d) broke the volunteer", *key)
                result = TaskResult(
                    task_id=task.task_id,
                    attempt=task.attempt,
                    exit_code=-1,
                    error=f"volunteer error: {error!r}",
                )
            finally:
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, workdir, True))
            # Shielded: the lifecycle has it in the outbox now; it must be saved and sent.
            await asyncio.shield(self._step(self._machine.finished(result)))
            log.info(
                "task %s (attempt %d) %s",
                *key,
                "completed" if result.succeeded else f"failed: {result.error}",
            )
            await self._record(task, result=result)
        except asyncio.CancelledError:
            await asyncio.shield(self._record(task, result=None))
            raise
        finally:
            self._pipelines.pop(key, None)
            self._turns.pop(key, None)
            self._ledgers.pop(key, None)
            # Shielded: a pipeline called off must still give its slot back.
            await asyncio.shield(self._step(self._machine.ended(key)))

    async def _record(self, task: TaskSpec, result: TaskResult | None) -> None:
        """What the attempt was and cost, for `vcnode history` (None: it was called off)."""
        key = (task.task_id, task.attempt)
        ledger = self._ledgers.get(key) or Ledger(received_at=self._clock())
        attempt = self._machine.attempts.get(key)
        run = ledger.run
        if result is not None:
            outcome = Outcome.COMPLETED if result.succeeded else Outcome.FAILED
            error, exit_code = result.error, result.exit_code
            sent = [*result.outputs, *result.logs]
            ledger.bytes_out = sum(ref.size for ref in sent)
        else:
            why = attempt.called_off if attempt is not None else "called off"
            handed_back = attempt is not None and attempt.handed_back
            outcome = Outcome.HANDED_BACK if handed_back else Outcome.CANCELLED
            error, exit_code = why, None
        entry = RanTask(
            task_id=task.task_id,
            attempt=task.attempt,
            workflow_id=task.workflow_id,
            manager_id=task.manager_id,
            user=task.user,
            image=task.image,
            outcome=outcome,
            error=error,
            exit_code=exit_code,
            received_at=ledger.received_at,
            started_at=run.started_at if run is not None else ledger.started_at,
            # When its container ended (not its outputs' delivery); now if it was stopped.
            finished_at=run.finished_at if run is not None else self._clock(),
            cpu_seconds=run.cpu_seconds if run is not None else None,
            peak_memory_mb=run.peak_memory_mb if run is not None else None,
            bytes_in=ledger.bytes_in,
            bytes_out=ledger.bytes_out,
        )
        try:
            await self._store.record_ran(entry)
        except Exception:  # the record is for the owner: losing one must not lose the task
            log.exception("could not record task %s (attempt %d) in the history", *key)

    async def _attempt(self, task: TaskSpec, workdir: Path) -> TaskResult:
        assert self._runtime is not None
        key = (task.task_id, task.attempt)
        input_dir, output_dir = workdir / "input", workdir / "output"
        try:
            await self._fetch_inputs(task, input_dir, copy=not self._runtime.isolated)
            await self._ensure_image(task)
            await asyncio.to_thread(_make_output_dir, output_dir)
            # Inputs are here; the container waits for its turn (we hold one task more than
            # we run, so the next one is ready the moment a slot frees). Nothing else
            # happens between the turn and the container: between two containers, every
            # millisecond counts. What it writes goes to the manager as it comes while
            # someone follows it (`vcnode logs -f`; volunteer_node/live_logs.py), the last
            # of it once the slot is free again.
            async with pushing(task.task_id, task.attempt, self._push_log_of(task)) as live:
                await self._step(self._machine.fetched(key))
                await self._turns[key].wait()
                try:
                    run = await self._runtime.run(
                        self._run_spec(task, input_dir, output_dir),
                        self._progress(task),
                        live.write if live is not None else None,
                        on_started=self._started_callback(key),
                    )
                finally:
                    await asyncio.shield(self._step(self._machine.run_ended(key)))
                self._ledger(task).run = run
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # Called off as it ended, and the runtime's clean-up took the cancel:
                    # this attempt must not go on to deliver anything.
                    raise asyncio.CancelledError
            outputs = Outputs()
            error = run.failure
            if run.succeeded:
                outputs = await self._deliver_outputs(task, output_dir)
        except TaskFailedError as failure:
            return TaskResult(
                task_id=task.task_id, attempt=task.attempt, exit_code=-1, error=str(failure)
            )
        logs, note = await self._deliver_logs(task, workdir / "logs", run, outputs)
        # `logs.inline` is every blob the result carries: the outputs' and the logs'.
        return replace(
            _result(task, run, error, outputs),
            logs=logs.refs,
            inline_outputs=logs.inline,
            log_note=note,
        )

    def _ledger(self, task: TaskSpec) -> Ledger:
        key = (task.task_id, task.attempt)
        return self._ledgers.setdefault(key, Ledger(received_at=self._clock()))

    def _started_callback(self, key: AttemptKey) -> Callable[[], None]:
        """Told by the runtime as the container starts: a hold that came while it was
        starting freezes it now."""

        def started() -> None:
            if (ledger := self._ledgers.get(key)) is not None:
                ledger.started_at = self._clock()
            step = asyncio.get_running_loop().create_task(
                self._step(self._machine.container_started(key))
            )
            self._ticks.add(step)
            step.add_done_callback(self._ticks.discard)

        return started

    async def _deliver_logs(
        self, task: TaskSpec, log_dir: Path, run: RunResult, outputs: Outputs
    ) -> tuple[Outputs, str]:
        """What the task wrote, to the manager: small logs inline (after the outputs, in
        what is left of the task's inline budget), the others uploaded; returns their refs
        with every blob the result carries (the outputs' too). Logs that cannot be
        delivered are said so in the result; they never fail the attempt."""
        streams = [
            (name, data) for name, data in (("stdout", run.stdout), ("stderr", run.stderr)) if data
        ]
        cut = [
            name
            for name, was_cut in (("stdout", run.stdout_cut), ("stderr", run.stderr_cut))
            if was_cut
        ]
        note = f"{' and '.join(cut)}: only the last {LOG_BYTES // 2**20} MiB" if cut else ""
        if not streams:
            return Outputs((), outputs.inline), note
        carried = [len(blob.content) for blob in outputs.inline]
        fits = inline.pick([*carried, *(len(data) for _, data in streams)])[len(carried) :]
        refs: list[FileRef] = []
        blobs: list[InlineBlob] = list(outputs.inline)
        deadline = time.monotonic() + self._config.upload_patience_seconds
        for (name, data), small in zip(streams, fits, strict=True):
            if small:
                blob = inline.blob_of(data)
                refs.append(FileRef(name, blob.sha256, len(data)))
                blobs.append(blob)
                continue
            path = log_dir / name
            await asyncio.to_thread(_write_log, path, data)
            try:
                refs.append(await self._upload_until_delivered(task, path, deadline, LOG_PURPOSE))
            except TaskFailedError as error:
                log.warning("task %s: its %s was not delivered: %s", task.task_id, name, error)
                note = "; ".join(filter(None, [note, f"{name} not delivered: {error}"]))
        return Outputs(tuple(refs), tuple(blobs)), note

    async def _ensure_image(self, task: TaskSpec) -> None:
        """Makes the task's image (the one it pins, if it pins one) present: ours, else
        pulled from its registry when the owner allows, else the manager's archive."""
        if self._load_image is None:
            return  # the process runtime has no images
        async with self._image_lock:
            current = await self._local_image(task)
            if current is not None and task.image_id in ("", current):
                return
            pull_failure = await self._try_pull(task)
            if pull_failure is None:
                return
            if not task.image_from_manager:
                raise TaskFailedError(
                    pull_failure or f"image {task.image} is not on this volunteer"
                )
            await self._load_from_manager(task)

    async def _try_pull(self, task: TaskSpec) -> str | None:
        """None once the pinned image is here from its registry; else why not ("" when the
        owner does not allow pulls)."""
        if not self._config.limits.allow_pull or self._pull_image is None:
            return ""
        try:
            await self._pull_image(task.image)
        except NodeError as error:
            log.warning("%s; trying the manager", error)
            return str(error)
        pulled = await self._local_image(task)
        if pulled is not None and task.image_id in ("", pulled):
            log.info("pulled image %s (%s) from its registry", task.image, pulled[:19])
            return None
        why = f"the registry's {task.image} is {pulled}, the task pins {task.image_id}"
        log.warning("%s; trying the manager", why)
        return why

    async def _local_image(self, task: TaskSpec) -> str | None:
        """The ID of the image here that the task would run: the one it pins, when held
        (tagged or not: images loaded from managers carry no tag), else the one its tag
        names; None when neither is here."""
        if task.image_id and await self._image_id(task.image_id) is not None:
            return task.image_id
        return await self._image_id(task.image)

    async def _load_from_manager(self, task: TaskSpec) -> None:
        assert self._load_image is not None
        async with contextlib.AsyncExitStack() as stack:
            try:
                ref = await self._transfers.image_archive(
                    ManagerPeer.of(task), task.image, task.image_id
                )
                archive = await stack.enter_async_context(
                    self._transfers.fetched(ManagerPeer.of(task), ref)
                )
                self._ledger(task).bytes_in += ref.size
            except NodeError as error:
                raise TaskFailedError(f"could not fetch image {task.image}: {error}") from None
            try:
                # The archive stays cached until it is loaded.
                await self._load_image(archive, task.image_id)
            except NodeError as error:
                raise TaskFailedError(str(error)) from None
        loaded = await self._local_image(task)
        if loaded is None or task.image_id not in ("", loaded):
            raise TaskFailedError(
                f"the manager's archive of {task.image} gave image {loaded}, not {task.image_id}"
            )
        log.info("loaded image %s (%s) from the manager", task.image, loaded[:19])

    def _run_spec(self, task: TaskSpec, input_dir: Path, output_dir: Path) -> RunSpec:
        limits = self._config.limits
        cpus = task.resources.cpus or 1.0
        if limits.max_cpus:
            cpus = min(cpus, limits.max_cpus)
        timeout = float(task.timeout_seconds)
        if limits.cpu_throttle_percent:
            share = limits.cpu_throttle_percent / 100
            # Docker refuses a CPU quota under 1 ms per 100 ms period.
            cpus = max(MIN_CPUS, cpus * share)
            # Slowed by its owner, not by itself: its time runs as slowly.
            timeout /= share
        return RunSpec(
            run_id=run_id(task),
            # By ID when it pins one: what runs is that image, whatever the tag names here.
            image=task.image_id or task.image,
            command=task.command,
            input_dir=input_dir,
            output_dir=output_dir,
            cpus=cpus,
            memory_mb=task.resources.memory_mb,
            timeout_seconds=timeout,
            network=task.network and limits.allow_network,
            # What it asked for, within what its owner gives (the cache's cap: 20 GiB unset).
            output_mb=min(task.resources.disk_mb or limits.max_disk_mb, limits.max_disk_mb),
        )

    def _push_log_of(self, task: TaskSpec) -> PushLog | None:
        push_log = self._push_log
        if push_log is None:
            return None
        manager = ManagerPeer.of(task)
        return lambda push: push_log(manager, push)

    def _progress(self, task: TaskSpec) -> Callable[[float], None]:
        def report(percent: float) -> None:
            self.reporter.send_progress(task.task_id, task.attempt, percent)

        return report

    async def _fetch_inputs(self, task: TaskSpec, input_dir: Path, *, copy: bool) -> None:
        try:
            carried = inline.verified(task.inputs, task.inline_inputs)
        except inline.InlineBlobError as error:
            raise TaskFailedError(f"the offer's inline input is wrong: {error}") from None
        small = [
            (input_dir / check_file_name(ref.name, "input"), carried[ref.sha256])
            for ref in task.inputs
            if ref.sha256 in carried
        ]
        await asyncio.to_thread(_write_files, input_dir, small)
        self._ledger(task).bytes_in += sum(
            ref.size for ref in task.inputs if ref.sha256 not in carried
        )
        for ref in task.inputs:
            if ref.sha256 in carried:
                continue
            name = check_file_name(ref.name, "input")
            try:
                async with self._transfers.fetched(ManagerPeer.of(task), ref) as cached:
                    target = input_dir / name
                    # The cache must never be writable by a task: containers see inputs
                    # read-only, but a plain process could write through a hard link.
                    if copy:
                        await asyncio.to_thread(shutil.copyfile, cached, target)
                    else:
                        await asyncio.to_thread(os.link, cached, target)
            except NodeError as error:
                raise TaskFailedError(f"could not fetch input {name}: {error}") from None

    async def _deliver_outputs(self, task: TaskSpec, output_dir: Path) -> Outputs:
        """Uploads the outputs to the manager, except small ones, which go inline with the
        result."""
        names = task.outputs or await asyncio.to_thread(_written_files, output_dir)
        files = []
        for name in names:
            path = await asyncio.to_thread(
                regular_file, output_dir, check_file_name(name, "output")
            )
            if path is None:
                raise TaskFailedError(f"the task did not write its output {name} (a regular file)")
            files.append(path)
        refs = []
        carried = []
        # One patience for the whole attempt, however many files wait for the manager.
        deadline = time.monotonic() + self._config.upload_patience_seconds
        for path, content in zip(files, await asyncio.to_thread(_small_files, files), strict=True):
            if content is None:
                refs.append(await self._upload_until_delivered(task, path, deadline))
                continue
            blob = inline.blob_of(content)
            refs.append(FileRef(path.name, blob.sha256, len(content)))
            carried.append(blob)
        return Outputs(tuple(refs), tuple(carried))

    async def _upload_until_delivered(
        self, task: TaskSpec, path: Path, deadline: float, kind: str = ""
    ) -> FileRef:
        """Keeps trying while the manager is away (a restart): outputs are costly to lose.
        Gives up at `deadline` (monotonic), failing the attempt. `kind` LOG_PURPOSE for a
        log (the manager counts those apart from outputs)."""
        backoff = Backoff(initial=1.0, maximum=UPLOAD_RETRY_MAX_SECONDS)
        purpose = f"{task.task_id}:{task.attempt}" + (f":{kind}" if kind else "")
        patience = self._config.upload_patience_seconds
        while True:
            try:
                return await self._transfers.send(ManagerPeer.of(task), path, purpose)
            except UnreachableError as error:
                if time.monotonic() >= deadline:
                    raise TaskFailedError(
                        f"could not deliver output {path.name} to the manager at "
                        f"{task.manager_address} within {patience:g} s: {error}"
                    ) from None
                delay = min(backoff.next_delay(), max(0.0, deadline - time.monotonic()))
                log.warning(
                    "upload of %s for %s failed (%s); retrying in %.1f s",
                    path.name,
                    task.task_id,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
            except NodeError as error:
                raise TaskFailedError(f"the manager refused output {path.name}: {error}") from None

    async def stop(self) -> None:
        """Stops every task (their containers are killed and removed) and takes no more."""
        await self._step(self._machine.stop())
        if self._pipelines:
            # Not `await pipeline`: that would swallow a cancel of stop() itself.
            await asyncio.wait(list(self._pipelines.values()))
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if self._ticks:
            await asyncio.wait(list(self._ticks))
        if self._carrying is not None:
            self._carrying.cancel()
            await asyncio.wait([self._carrying])


def _clock_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def _make_output_dir(path: Path) -> None:
    path.mkdir(parents=True)
    path.chmod(0o777)  # the container runs as nobody


@dataclass
class Ledger:
    """What one attempt in progress has used so far."""

    received_at: float
    # When its container started (told by the runtime), and how it ended if it did.
    started_at: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    run: RunResult | None = None


@dataclass(frozen=True)
class Outputs:
    """A task's outputs as its result names them, and the bytes of those carried inline."""

    refs: tuple[FileRef, ...] = ()
    inline: tuple[InlineBlob, ...] = ()


def _write_log(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_files(directory: Path, files: list[tuple[Path, bytes]]) -> None:
    directory.mkdir(parents=True)
    for path, content in files:
        path.write_bytes(content)


def _small_files(paths: list[Path]) -> list[bytes | None]:
    """The bytes of the files that travel inline (None for the others)."""
    fits = inline.pick([path.stat().st_size for path in paths])
    return [path.read_bytes() if small else None for path, small in zip(paths, fits, strict=True)]


def _written_files(output_dir: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in output_dir.iterdir() if p.name != PROGRESS_FILE))


def _result(task: TaskSpec, run: RunResult, error: str, outputs: Outputs) -> TaskResult:
    return TaskResult(
        task_id=task.task_id,
        attempt=task.attempt,
        exit_code=run.exit_code if run.exit_code is not None else -1,
        error=error,
        outputs=outputs.refs,
        inline_outputs=outputs.inline,
        started_at=run.started_at,
        finished_at=run.finished_at,
        stdout_tail=run.stdout_tail,
        stderr_tail=run.stderr_tail,
    )
