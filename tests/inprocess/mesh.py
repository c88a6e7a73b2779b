"""An in-process mesh: the coordinator's Pool, volunteers' TaskWorkers and a WorkflowManager,
each over its real SQLite store in a temporary directory, joined by in-process links in place
of gRPC. What is fake is what lies outside the three nodes' logic: containers (a runtime whose
runs wait on a gate the test opens), blob transfers (straight from and to the manager's
BlobStore), and the wire itself, which a test may break, or make lose or repeat a message.

The link does what the real ones do at their edges: a volunteer's words go out in order
through a queue that outlives sessions (volunteer_node/link.py), and the coordinator's go
to the worker one at a time, as the servicer reads them (coordinator_node/servicer.py); a
session that breaks loses what was still in its outbox.

Everything waits by polling a condition with a deadline (`Mesh.until`), never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from coordinator_node.pool import AckResult, Outgoing, Pool, PoolSession
from coordinator_node.registry import VolunteerRegistry
from coordinator_node.scheduler import Scheduler, SendCancel, SendOffer
from coordinator_node.store import CoordinatorStore
from daemon.errors import NodeError
from daemon.models import (
    FileRef,
    Load,
    OwnerLimits,
    Registration,
    Resources,
    TaskEvent,
    TaskResult,
    TaskSpec,
    TrustRecord,
    Verdict,
    Volunteer,
    WorkflowUpdate,
)
from daemon.runtime.spec import (
    OutputCallback,
    ProgressCallback,
    RunResult,
    RunSpec,
    StartedCallback,
)
from daemon.supervision import Supervisor
from daemon.transfer.blobstore import BlobStore
from manager_node.coordinator_client import CoordinatorClient
from manager_node.images import ImageArchives
from manager_node.manager import WorkflowManager
from manager_node.store import ManagerStore
from volunteer_node.blobs import ManagerPeer
from volunteer_node.lifecycle import DEFAULT_HOLD_GRACE_SECONDS
from volunteer_node.store import VolunteerStore
from volunteer_node.worker import TaskWorker, WorkerConfig

WAIT_SECONDS = 5.0
POLL_SECONDS = 0.005
CLUSTER = "lab"
PROTOCOL_VERSION = 1
MANAGER_ID = "manager-1"
MANAGER_ADDRESS = "127.0.0.1:7451"
# Long: the links send no heartbeats, and no volunteer may be found lost during a test.
HEARTBEAT_SECONDS = 60.0
OUTPUT_NAME = "out.txt"
RESOURCES = Resources(cpu_cores=4, memory_mb=8192, disk_free_mb=10_000, docker_available=False)
# One slot, so one task more held fetched ahead; the process runtime (no images to check).
LIMITS = OwnerLimits(max_concurrent_tasks=1, allow_process_runtime=True)

T = TypeVar("T")


# --- what crosses a link --------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    task_id: str
    attempt: int


@dataclass(frozen=True)
class Started:
    task_id: str
    attempt: int


@dataclass(frozen=True)
class Decline:
    task_id: str
    attempt: int
    reason: str


@dataclass(frozen=True)
class Progress:
    task_id: str
    attempt: int
    percent: float


@dataclass(frozen=True)
class Result:
    result: TaskResult

    @property
    def task_id(self) -> str:
        return self.result.task_id

    @property
    def attempt(self) -> int:
        return self.result.attempt


@dataclass(frozen=True)
class Goodbye:
    reason: str


@dataclass(frozen=True)
class Heartbeat:
    load: Load


# A volunteer's word to its coordinator, and the coordinator's to its volunteer.
Up = Accept | Started | Decline | Progress | Result | Goodbye | Heartbeat
Down = Outgoing
Message = Up | Down


def about(message: Message) -> str:
    """The task a message is about ("" for those about none)."""
    if isinstance(message, SendOffer):
        return message.task.task_id
    if isinstance(message, TrustRecord | Goodbye | Heartbeat):
        return ""
    return message.task_id


def same(message: T) -> T:
    return message


@dataclass
class Fault:
    """What the wire does to the next message of `kind` about `task_id` ("" any task)."""

    kind: type[Any]
    task_id: str
    action: Literal["drop", "duplicate"]
    # For a duplicate: what arrives after the message, made from it, in order.
    copies: tuple[Callable[[Any], Any], ...] = (same,)

    def matches(self, message: Message) -> bool:
        return isinstance(message, self.kind) and self.task_id in ("", about(message))


# --- the fake parts ---------------------------------------------------------------------------


@dataclass
class FakeRun:
    run_id: str
    # "running", then "completed", or "cancelled" (its caller was cancelled: it was killed).
    state: str = "running"

    @property
    def task_id(self) -> str:
        # run_id(task) is "<task id>.<attempt>-<digest>" for the plain task ids used here.
        return self.run_id.rsplit(".", 1)[0]


class GatedRuntime:
    """Runs each task until the test opens its gate (`finish`); with `finish_at_once`,
    every run ends as soon as it started. Each run writes OUTPUT_NAME."""

    name = "process"
    isolated = False

    def __init__(self, finish_at_once: bool = False) -> None:
        self.finish_at_once = finish_at_once
        self.runs: list[FakeRun] = []
        self.freezes: list[str] = []
        self.thaws: list[str] = []
        self._gates: dict[str, asyncio.Event] = {}

    def gate(self, task_id: str) -> asyncio.Event:
        return self._gates.setdefault(task_id, asyncio.Event())

    def finish(self, task_id: str) -> None:
        """Lets every run of the task end, successfully."""
        self.gate(task_id).set()

    def runs_of(self, task_id: str) -> list[FakeRun]:
        return [run for run in self.runs if run.task_id == task_id]

    def running(self) -> list[str]:
        return [run.task_id for run in self.runs if run.state == "running"]

    async def run(
        self,
        spec: RunSpec,
        on_progress: ProgressCallback,
        on_output: OutputCallback | None = None,
        *,
        on_started: StartedCallback | None = None,
    ) -> RunResult:
        fake = FakeRun(spec.run_id)
        self.runs.append(fake)
        started_at = time.time()
        if on_started is not None:
            on_started()
        on_progress(50.0)
        try:
            if not self.finish_at_once:
                await self.gate(fake.task_id).wait()
        except asyncio.CancelledError:
            fake.state = "cancelled"
            raise
        (spec.output_dir / OUTPUT_NAME).write_text(f"{spec.run_id}\n")
        fake.state = "completed"
        return RunResult(
            exit_code=0,
            failure="",
            stdout_tail="",
            stderr_tail="",
            started_at=started_at,
            finished_at=time.time(),
        )

    def _in_progress(self, run_id: str) -> bool:
        return any(run.run_id == run_id and run.state == "running" for run in self.runs)

    async def freeze(self, run_id: str) -> bool:
        self.freezes.append(run_id)
        return self._in_progress(run_id)

    async def thaw(self, run_id: str) -> bool:
        self.thaws.append(run_id)
        return self._in_progress(run_id)


@dataclass
class FakeFetch:
    sha256: str
    # "waiting" (held by the test), "fetched", or "called off" (cancelled while waiting).
    state: str = "waiting"


class ManagerBlobTransfers:
    """Transfers straight from and to the manager's BlobStore. Fetches wait while `held`
    (a test calls something off mid-fetch)."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self.fetches: list[FakeFetch] = []
        self.sent: list[FileRef] = []
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    @contextlib.asynccontextmanager
    async def fetched(self, manager: ManagerPeer, ref: FileRef) -> AsyncIterator[Path]:
        fetch = FakeFetch(ref.sha256)
        self.fetches.append(fetch)
        try:
            await self._open.wait()
        except asyncio.CancelledError:
            fetch.state = "called off"
            raise
        fetch.state = "fetched"
        # The worker copies it (the runtime is not isolated): the blob itself is safe.
        yield await self._blobs.path(ref.sha256)

    async def send(self, manager: ManagerPeer, path: Path, purpose: str) -> FileRef:
        sha256, size = await self._blobs.put_file(path)
        ref = FileRef(path.name, sha256, size)
        self.sent.append(ref)
        return ref

    async def image_archive(self, manager: ManagerPeer, image: str, image_id: str) -> FileRef:
        raise AssertionError("the process runtime has no images")


class NoImages(ImageArchives):
    """The manager's host has no Docker engine: tasks pin no image."""

    async def image_id(self, image: str) -> str | None:
        return None


async def no_image(image: str) -> str | None:
    return None


# --- the links --------------------------------------------------------------------------------


class Wire:
    """Faults a test sets on a link, and what crossed it."""

    def __init__(self) -> None:
        # Handled by the coordinator, and by the volunteer, in order (each noted once its
        # receiver is done with it: a test that sees it may look at the receiver's store).
        self.told: list[Up] = []
        self.heard: list[Down] = []
        self.dropped: list[Message] = []
        # Left in a session's outbox when it broke: never heard.
        self.lost: list[Down] = []
        self._faults: list[Fault] = []

    def drop_next(self, kind: type[Any], task_id: str = "") -> None:
        self._faults.append(Fault(kind, task_id, "drop"))

    def duplicate_next(
        self,
        kind: type[Any],
        task_id: str = "",
        copies: Sequence[Callable[[Any], Any]] = (same,),
    ) -> None:
        """The next such message arrives, then each of `copies` made of it."""
        self._faults.append(Fault(kind, task_id, "duplicate", tuple(copies)))

    def pending_faults(self) -> int:
        return len(self._faults)

    def passing(self, message: T) -> list[T]:
        """What arrives of `message`: nothing, itself, or itself and its copies."""
        fault = next((f for f in self._faults if f.matches(cast(Message, message))), None)
        if fault is None:
            return [message]
        self._faults.remove(fault)
        if fault.action == "drop":
            self.dropped.append(cast(Message, message))
            return []
        return [message, *(copy(message) for copy in fault.copies)]

    def told_about(self, task_id: str, kind: type[Any] = object) -> list[Any]:
        return [m for m in self.told if about(m) == task_id and isinstance(m, kind)]

    def heard_about(self, task_id: str, kind: type[Any] = object) -> list[Any]:
        return [m for m in self.heard if about(m) == task_id and isinstance(m, kind)]


class InProcessLink:
    """A volunteer's session with the Pool, in process: the worker's Reporter on one side,
    the PoolSession on the other."""

    def __init__(
        self,
        pool: Pool,
        worker: TaskWorker,
        registration: Callable[[], Registration],
        supervisor: Supervisor,
        wire: Wire,
    ) -> None:
        self._pool = pool
        self._worker = worker
        self._registration = registration
        self._supervisor = supervisor
        self.wire = wire
        self.session: PoolSession | None = None
        self.sessions = 0
        # Outlives sessions, as the real link's queue does: what a broken session could not
        # send goes on the next.
        self._outgoing: deque[Up] = deque()
        self._wakeup = asyncio.Event()
        # Held while a word is being delivered: a session breaks between words, not in one.
        self._delivering = asyncio.Lock()
        self._goodbye_heard = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._sender = supervisor.spawn(self._send_forever(), "link sender")

    # --- the worker's Reporter ----------------------------------------------------------------

    def send_accept(self, task_id: str, attempt: int) -> None:
        self._queue(Accept(task_id, attempt))

    def send_started(self, task_id: str, attempt: int) -> None:
        self._queue(Started(task_id, attempt))

    def send_decline(self, task_id: str, attempt: int, reason: str) -> None:
        self._queue(Decline(task_id, attempt, reason))

    def send_progress(self, task_id: str, attempt: int, percent: float) -> None:
        self._queue(Progress(task_id, attempt, percent))

    def send_result(self, result: TaskResult) -> None:
        self._queue(Result(result))

    def send_heartbeat(self) -> None:
        """Whether the volunteer takes tasks, as the real link's heartbeat says it."""
        running = len(self._worker.running_task_ids())
        self._queue(
            Heartbeat(Load(running_tasks=running, unavailable=self._worker.availability()[0]))
        )

    def _queue(self, message: Up) -> None:
        self._outgoing.append(message)
        self._wakeup.set()

    # --- sessions -----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Registers (as volunteer_node/role.py does), then, welcomed, tells the worker, and
        from then on hands it what the coordinator says."""
        assert self.session is None, "connected already"
        session = await self._pool.join(self._registration())
        self.session = session
        self.sessions += 1
        self._wakeup.set()
        await self._worker.on_connected()
        self._pump = self._supervisor.spawn(self._pump_session(session), "link pump")

    async def break_session(self) -> None:
        """The stream breaks: what the coordinator had not sent yet is lost with it; what
        the volunteer had not sent waits for the next session."""
        session = self.session
        if session is None:
            return
        async with self._delivering:
            self.session = None
        session.close()
        if self._pump is not None:
            await asyncio.wait([self._pump])
            self._pump = None
        await self._pool.leave(session)

    async def reconnect(self) -> None:
        await self.break_session()
        await self.connect()

    async def leave(self, reason: str) -> None:
        """Says goodbye after every word queued before it, then ends the session."""
        if self.session is None:
            return
        self._goodbye_heard.clear()
        self._queue(Goodbye(reason))
        await asyncio.wait_for(self._goodbye_heard.wait(), WAIT_SECONDS)
        await self.break_session()

    async def close(self) -> None:
        await self.break_session()
        await self._supervisor.cancel(self._sender)

    async def _pump_session(self, session: PoolSession) -> None:
        """The coordinator's words to the worker, one at a time, until the session ends."""
        while (message := await session.outbox.get()) is not None:
            if self.session is not session:
                self.wire.lost.append(message)
                continue
            for delivered in self.wire.passing(message):
                await self._hand_to_worker(delivered)
                self.wire.heard.append(delivered)
        while not session.outbox.empty():
            if (left := session.outbox.get_nowait()) is not None:
                self.wire.lost.append(left)
        if self.session is session:  # the coordinator ended it (it stopped, or replaced it)
            self.session = None
            await self._pool.leave(session)

    async def _hand_to_worker(self, message: Down) -> None:
        if isinstance(message, SendOffer):
            await self._worker.on_offer(message.task)
        elif isinstance(message, SendCancel):
            await self._worker.on_cancel(message.task_id, message.reason)
        elif isinstance(message, AckResult):
            await self._worker.on_result_ack(message.task_id, message.attempt)
        # A TrustRecord is for the owner's `vcnode status`: nothing for the worker.

    async def _send_forever(self) -> None:
        while True:
            while not (self._outgoing and self.session is not None):
                self._wakeup.clear()
                await self._wakeup.wait()
            async with self._delivering:
                session = self.session
                if session is None:
                    continue
                message = self._outgoing.popleft()
                for delivered in self.wire.passing(message):
                    await self._tell_pool(session, delivered)
                    self.wire.told.append(delivered)

    async def _tell_pool(self, session: PoolSession, message: Up) -> None:
        """What the servicer's _handle does with each kind of message."""
        pool = self._pool
        if isinstance(message, Accept):
            await pool.accepted(session, message.task_id, message.attempt, says_started=True)
        elif isinstance(message, Started):
            await pool.started(session, message.task_id, message.attempt)
        elif isinstance(message, Decline):
            await pool.declined(session, message.task_id, message.attempt, message.reason)
        elif isinstance(message, Progress):
            await pool.progressed(session, message.task_id, message.attempt, message.percent)
        elif isinstance(message, Result):
            await pool.finished(session, message.result)
        elif isinstance(message, Heartbeat):
            await pool.heartbeat(session, message.load)
        else:
            await pool.depart(session, message.reason)
            self._goodbye_heard.set()


class InProcessCoordinatorClient:
    """CoordinatorClient's calls, made on the Pool directly, one at a time in the order the
    manager made them (the real client sends cancels ahead of submissions still queued and
    drops those of a cancelled workflow; here nothing stays queued for long enough to
    matter); events followed from the manager's last sequence, as the real client does."""

    def __init__(
        self,
        pool: Pool,
        manager: WorkflowManager,
        manager_id: str,
        supervisor: Supervisor,
    ) -> None:
        self._pool = pool
        self._manager = manager
        self._manager_id = manager_id
        self._supervisor = supervisor
        self._calls: asyncio.Queue[Callable[[], Awaitable[object]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            self._supervisor.spawn(self._call_forever(), "manager calls"),
            self._supervisor.spawn(self._follow_events(), "manager watch"),
        ]

    async def stop(self) -> None:
        await self._supervisor.cancel(*self._tasks)

    async def calls_made(self) -> None:
        """Until every call queued so far was made."""
        await self._calls.join()

    def submit(self, specs: Sequence[TaskSpec]) -> None:
        # The manager named in each task is the caller (the servicer's SubmitTasks).
        named = [replace(spec, manager_id=self._manager_id) for spec in specs]
        self._call(lambda: self._pool.submit(self._manager_id, named))

    def cancel(self, workflow_id: str) -> None:
        self._call(lambda: self._pool.cancel(self._manager_id, workflow_id, ()))

    def cancel_tasks(self, workflow_id: str, task_ids: Sequence[str]) -> None:
        named = tuple(task_ids)
        self._call(lambda: self._pool.cancel(self._manager_id, "", named))

    def report(self, verdicts: Sequence[Verdict]) -> None:
        if verdicts:
            chosen = list(verdicts)
            self._call(lambda: self._pool.report_verdicts(self._manager_id, chosen))

    async def volunteers(self) -> list[Volunteer] | None:
        return self._pool.volunteers()

    async def revoked(self) -> frozenset[str] | None:
        return frozenset()

    def _call(self, call: Callable[[], Awaitable[object]]) -> None:
        self._calls.put_nowait(call)

    async def _call_forever(self) -> None:
        while True:
            call = await self._calls.get()
            try:
                await call()
            finally:
                self._calls.task_done()

    async def _follow_events(self) -> None:
        after = await self._manager.last_sequence()
        events = self._pool.watch(self._manager_id, "", after, knows_fetching=True)
        async with contextlib.aclosing(cast(Any, events)) as following:
            async for event in following:
                await self._manager.on_event(event)


# --- the nodes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolunteerTask:
    task_id: str
    attempt: int
    state: str


@dataclass(frozen=True)
class OutboxRow:
    task_id: str
    attempt: int
    delivered: bool


class MeshVolunteer:
    """A volunteer: a real TaskWorker over a real VolunteerStore, a GatedRuntime, transfers
    from the manager's blobs, and an in-process link to the Pool."""

    def __init__(
        self,
        mesh: Mesh,
        volunteer_id: str,
        *,
        limits: OwnerLimits,
        hold_grace_seconds: float,
        finish_at_once: bool,
    ) -> None:
        self._mesh = mesh
        self.volunteer_id = volunteer_id
        self.data_dir = mesh.root / volunteer_id
        self.limits = limits
        self.hold_grace_seconds = hold_grace_seconds
        self.runtime = GatedRuntime(finish_at_once)
        self.transfers = ManagerBlobTransfers(mesh.blobs)
        # One wire for the volunteer's whole life: what crossed it, whatever the session.
        self.wire = Wire()
        self.store = VolunteerStore(self.data_dir)
        self.worker = self._new_worker()
        self.link = self._new_link()

    def _new_worker(self) -> TaskWorker:
        return TaskWorker(
            WorkerConfig(
                self.data_dir / "tasks", self.limits, hold_grace_seconds=self.hold_grace_seconds
            ),
            self.store,
            self.transfers,
            self.runtime,
            resources=lambda: RESOURCES,
            image_id=no_image,
        )

    def _new_link(self) -> InProcessLink:
        link = InProcessLink(
            self._mesh.pool, self.worker, self._registration, self._mesh.supervisor, self.wire
        )
        self.worker.attach(link)
        return link

    def _registration(self) -> Registration:
        """As volunteer_node/role.py makes it."""
        return Registration(
            volunteer_id=self.volunteer_id,
            hostname=f"{self.volunteer_id}.lab",
            cluster=CLUSTER,
            protocol_version=PROTOCOL_VERSION,
            version="test",
            resources=RESOURCES,
            limits=self.limits,
            running_task_ids=self.worker.running_task_ids(),
        )

    async def start(self, *, connect: bool = True) -> None:
        await self.store.open()
        await self.worker.open()
        if connect:
            await self.link.connect()

    async def restart(self) -> None:
        """Stops as the role does (tasks, then goodbye), then starts again from the same
        data dir: a new store object on the same file, a new worker, a new session."""
        await self.worker.stop()
        await self.link.leave("its owner restarted it")
        await self.link.close()
        await self.store.close()
        self.store = VolunteerStore(self.data_dir)
        self.worker = self._new_worker()
        self.link = self._new_link()
        await self.start()

    async def close(self) -> None:
        await self.worker.stop()
        await self.link.close()
        await self.store.close()

    async def tasks(self) -> list[VolunteerTask]:
        rows = await self.store.database.read(
            lambda db: db.execute("SELECT id, attempt, state FROM tasks ORDER BY rowid").fetchall()
        )
        return [VolunteerTask(*row) for row in rows]

    async def task_states(self, task_id: str) -> list[tuple[int, str]]:
        return [(t.attempt, t.state) for t in await self.tasks() if t.task_id == task_id]

    async def outbox(self) -> list[OutboxRow]:
        rows = await self.store.database.read(
            lambda db: db.execute(
                "SELECT task_id, attempt, delivered_at IS NOT NULL FROM outbox ORDER BY id"
            ).fetchall()
        )
        return [
            OutboxRow(task_id, attempt, bool(delivered)) for task_id, attempt, delivered in rows
        ]


@dataclass(frozen=True)
class CoordinatorTask:
    state: str
    attempts: int
    failures: int
    volunteer_id: str


@dataclass(frozen=True)
class ManagerTask:
    state: str
    volunteer_id: str


class Mesh:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.failures: list[BaseException] = []
        self.supervisor = Supervisor(self._fatal)
        self.coordinator_store = CoordinatorStore(root / "coordinator")
        self.pool = Pool(
            self.coordinator_store,
            VolunteerRegistry(HEARTBEAT_SECONDS),
            Scheduler(),
            cluster=CLUSTER,
            protocol_version=PROTOCOL_VERSION,
            supervisor=self.supervisor,
        )
        manager_dir = root / "manager"
        self.manager_store = ManagerStore(manager_dir)
        self.blobs = BlobStore(manager_dir / "blobs", max_blob_bytes=2**30, quota_bytes=2**32)
        self.manager = WorkflowManager(
            self.manager_store,
            self.blobs,
            manager_dir / "workflows",
            NoImages(self.blobs, self.manager_store, manager_dir / "images"),
            self.supervisor,
        )
        self.client = InProcessCoordinatorClient(
            self.pool, self.manager, MANAGER_ID, self.supervisor
        )
        # What the manager told its watchers (`vcnode status -f`, the dashboard), in order.
        self.updates: list[WorkflowUpdate] = []
        self.manager.listeners.append(self.updates.append)
        self.volunteers: list[MeshVolunteer] = []

    def _fatal(self, error: NodeError) -> None:
        self.failures.append(error)

    async def open(self) -> None:
        for directory in (self.root / "coordinator", self.root / "manager"):
            directory.mkdir(parents=True, exist_ok=True)
        await self.coordinator_store.open()
        await self.pool.start()
        await self.manager_store.open()
        await self.blobs.open()
        await self.manager.open()
        # WorkflowManager takes the gRPC client's type; the stand-in has its every call.
        await self.manager.start(cast(CoordinatorClient, self.client), MANAGER_ADDRESS)
        self.client.start()

    async def close(self) -> None:
        for volunteer in self.volunteers:
            await volunteer.close()
        await self.client.stop()
        await self.pool.stop()
        await self.supervisor.stop()  # merges
        await self.manager.stop()
        await self.blobs.close()
        await self.manager_store.close()
        await self.coordinator_store.close()

    async def volunteer(
        self,
        volunteer_id: str,
        *,
        limits: OwnerLimits = LIMITS,
        hold_grace_seconds: float = DEFAULT_HOLD_GRACE_SECONDS,
        finish_at_once: bool = False,
        connect: bool = True,
    ) -> MeshVolunteer:
        volunteer = MeshVolunteer(
            self,
            volunteer_id,
            limits=limits,
            hold_grace_seconds=hold_grace_seconds,
            finish_at_once=finish_at_once,
        )
        self.volunteers.append(volunteer)
        (self.root / volunteer_id).mkdir(parents=True, exist_ok=True)
        await volunteer.start(connect=connect)
        return volunteer

    # --- the manager ------------------------------------------------------------------------

    async def submit(self, workflow_text: str, inputs: Sequence[bytes] = ()) -> str:
        """Submits the workflow (its input files sent inline, named input-N.bin) and waits
        until the manager has handed its tasks to the coordinator."""
        files = [
            (FileRef(f"input-{n}.bin", hashlib.sha256(data).hexdigest(), len(data)), data)
            for n, data in enumerate(inputs)
        ]
        submitted = await self.manager.submit(workflow_text, {}, [], files)
        await self.client.calls_made()
        return submitted.workflow_id

    async def cancel(self, workflow_id: str) -> None:
        await self.manager.cancel(workflow_id)
        await self.client.calls_made()

    # --- what the stores say ----------------------------------------------------------------

    async def coordinator_task(self, task_id: str) -> CoordinatorTask | None:
        row = await self.coordinator_store.database.read(
            lambda db: db.execute(
                "SELECT state, attempts, failures, volunteer_id FROM tasks WHERE id = ?", [task_id]
            ).fetchone()
        )
        return CoordinatorTask(row[0], row[1], row[2], row[3] or "") if row else None

    async def coordinator_events(self, task_id: str) -> list[TaskEvent]:
        events = await self.coordinator_store.task_events(MANAGER_ID, "", 0)
        return [event for event in events if event.task_id == task_id]

    async def manager_task(self, task_id: str) -> ManagerTask | None:
        row = await self.manager_store.database.read(
            lambda db: db.execute(
                "SELECT state, volunteer_id FROM tasks WHERE id = ?", [task_id]
            ).fetchone()
        )
        return ManagerTask(row[0], row[1] or "") if row else None

    async def workflow_state(self, workflow_id: str) -> str | None:
        return await self.manager_store.workflow_state(workflow_id)

    def shown(self, task_id: str, kind: str) -> int:
        """How many times the manager told its watchers the task became `kind`."""
        return sum(1 for u in self.updates if u.task_id == task_id and u.kind == kind)

    # --- waiting ----------------------------------------------------------------------------

    async def until(
        self,
        condition: Callable[[], bool | Awaitable[bool]],
        what: str,
        within: float = WAIT_SECONDS,
    ) -> None:
        await until(condition, what, within, self.failures)


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    within: float = WAIT_SECONDS,
    failures: list[BaseException] | None = None,
) -> None:
    """Polls `condition` until it holds; fails naming `what` after `within` seconds, or at once
    when a background task of the mesh crashed."""
    deadline = time.monotonic() + within
    while True:
        if failures:
            raise AssertionError(f"a part of the mesh crashed: {failures[0]!r}")
        held = condition()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)


@contextlib.asynccontextmanager
async def running_mesh(root: Path) -> AsyncIterator[Mesh]:
    mesh = Mesh(root)
    await mesh.open()
    try:
        yield mesh
    finally:
        await mesh.close()
    if mesh.failures:
        raise AssertionError(f"a part of the mesh crashed: {mesh.failures[0]!r}")


def workflow(*names: str, inputs: int = 0) -> str:
    """A `[[tasks]]` workflow of tasks that each write OUTPUT_NAME and read `inputs` files
    (input-N.bin, as Mesh.submit names them)."""
    read = ", ".join(f'"input-{n}.bin"' for n in range(inputs))
    return '[workflow]\nname = "mesh"\nvalidation = "none"\n' + "".join(
        f'\n[[tasks]]\nname = "{name}"\ncommand = ["work"]\noutputs = ["{OUTPUT_NAME}"]\n'
        + (f"inputs = [{read}]\n" if inputs else "")
        for name in names
    )
