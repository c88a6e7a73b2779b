"""The manager's I/O shell: turns workflow files into tasks, follows them through the
coordinator's events, verifies outputs, merges results, and tells watchers.

Blobs are shared only on purpose: a volunteer may download a workflow's inputs and a client
its merged results; an upload is accepted only for a task of ours that is still going.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import shutil
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import aiorwlock

from daemon import inline
from daemon.errors import (
    AccessDeniedError,
    InvalidInputError,
    NodeError,
    NotFoundError,
    RejectedError,
)
from daemon.models import (
    EventKind,
    FileRef,
    InlineBlob,
    ReasonGroup,
    Submitted,
    TaskEvent,
    TaskExplanation,
    TaskResult,
    TaskSpec,
    Verdict,
    Volunteer,
    WorkflowUpdate,
)
from daemon.resources import MIB
from daemon.runtime.spec import LOG_BYTES, LogChunk
from daemon.supervision import Supervisor
from daemon.task_files import LOG_PURPOSE, outputs_problem
from daemon.transfer.blobstore import BlobStore
from daemon.transport.access import PEOPLE, Caller
from daemon.trust.pki import is_owner_name
from manager_node.comparison import answer_of
from manager_node.coordinator_client import CoordinatorClient
from manager_node.holders import Holders, holder_of
from manager_node.images import ImageArchives
from manager_node.live_logs import STREAMS, LiveLogs, Piece, Unit
from manager_node.store import COORDINATOR_SEQUENCE, ManagerStore
from manager_node.submission import TaskBuilder
from manager_node.task_logs import LogUnit, TaskLog, TaskLogs
from manager_node.validation import (
    Copy,
    CopyState,
    Decision,
    copy_id,
    new_validation,
    task_of,
)
from manager_node.validation import Verdict as CopyVerdict
from manager_node.why import why_fetching, why_waiting
from manager_node.workflow import (
    MissingUpstreamError,
    TaskStatus,
    WorkflowRun,
    WorkflowState,
    WorkflowTask,
    workflow_counts,
)
from splitters.api import (
    Splitter,
    run_step,
)
from splitters.registry import get_splitter
from workflows.file import EXPLICIT_TYPE, WorkflowFile, parse_workflow

log = logging.getLogger(__name__)

# Keys the spot checks' draws (manager meta).
SPOT_CHECK_SECRET = "spot_check_secret"
# What a task that asked for no disk may send in all, as the manager counts it (its
# volunteer holds it to its owner's disk cap besides).
UNSIZED_OUTPUT_BYTES = 64 * 1024**3
# Blobs a delete (or an orphan collection) removes per hold of the manager's lock: events
# wait for one batch at most, never for the whole of a large workflow.
FREE_BATCH = 256


@dataclass(frozen=True)
class Deleted:
    workflow_id: str
    blobs: int  # blobs removed from the store: those no other workflow uses
    freed_bytes: int


class WorkflowManager:
    def __init__(
        self,
        store: ManagerStore,
        blobs: BlobStore,
        workdir: Path,
        images: ImageArchives,
        supervisor: Supervisor,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._builder = TaskBuilder(blobs, workdir, images, self._pool, lambda: self.address)
        self._workdir = workdir
        self._images = images
        self._supervisor = supervisor
        self.coordinator: CoordinatorClient | None = None
        self.address = ""
        self._runs: dict[str, WorkflowRun] = {}
        self._types: dict[str, str] = {}  # workflow id -> splitter name (or "tasks")
        self._specs: dict[str, TaskSpec] = {}
        self._shareable: set[str] = set()
        # Image archives served (sha256 -> image ID), and who holds which task now.
        self._archives: dict[str, str] = {}
        self._holders = Holders()
        # What running attempts write, for `vcnode logs -f` (memory only, bounded).
        self._live = LiveLogs()
        self._logs = TaskLogs(store, blobs, self._live, self._unit_now)
        # What the running attempt of each task sent (task id -> sha256 -> size); a task
        # that stops running (ended, handed back) starts again from nothing.
        self._uploads: dict[str, dict[str, int]] = {}
        self._watchers: dict[str, set[asyncio.Queue[WorkflowUpdate | None]]] = {}
        # Told every update of every workflow (the dashboard); a listener must not block.
        self.listeners: list[Callable[[WorkflowUpdate], None]] = []
        # The last decline reason of each volunteer that declined a task (task -> volunteer
        # -> reason), for `status --why`; in memory only.
        self._declines: dict[str, dict[str, str]] = {}
        self._spot_check_secret = b""
        self._merges: dict[str, asyncio.Task[None]] = {}  # by workflow id
        self._lock = asyncio.Lock()
        # Held shared by submissions (from their first blob to their records) and resumes;
        # exclusively by a delete, which must not remove a blob they are about to refer to.
        self._references = aiorwlock.RWLock()
        # Blobs a delete or an orphan collection is about to remove (changed under the
        # lock). Events go on meanwhile: one whose result refers to such a blob (the same
        # log line in another workflow, say) takes it out (see _arrived); and while an
        # orphan collection decides, `_referred` notes what events came to refer to.
        self._freeing: set[str] = set()
        self._referred: set[str] | None = None

    async def open(self) -> None:
        secret = await self._store.meta(SPOT_CHECK_SECRET)
        if secret is None:
            secret = secrets.token_hex(32)
            await self._store.set_meta(SPOT_CHECK_SECRET, secret)
        self._spot_check_secret = bytes.fromhex(secret)
        self._shareable = await self._store.shareable_blobs()
        for stored in await self._store.unfinished_runs():
            run = WorkflowRun.of(stored.workflow_id, stored.tasks, stored.on_failure)
            self._runs[stored.workflow_id] = run
            self._track(run.tasks.values())
            self._types[stored.workflow_id] = stored.type
            self._specs.update(stored.specs)
            for task in run.tasks.values():
                self._register_copies(task)
            if stored.state == WorkflowState.MERGING.value:
                self._start_merge(stored.workflow_id)
        if self._runs:
            log.info("resuming %d unfinished workflows", len(self._runs))

    async def start(self, coordinator: CoordinatorClient, address: str) -> None:
        """Hands over, again, what was ready before a restart (the coordinator dedupes)."""
        self.coordinator = coordinator
        self.address = address
        # Verdicts may have been lost with the process: the coordinator counts each once.
        coordinator.report(
            [
                verdict
                for run in self._runs.values()
                for task in run.tasks.values()
                for verdict in _verdicts(task, [c for c in _copies(task) if c.verdict])
            ]
        )
        for run in list(self._runs.values()):
            held = [t for t in run.tasks.values() if t.status is TaskStatus.QUEUED or t.status.held]
            await self._submit(held)
            await self._hand_over_ready(run)
            if run.finished:  # a task that could not start ended what was left
                await self._finish(run)

    # --- transfer policy ------------------------------------------------------------------

    async def may_download(self, sha256: str, caller: Caller) -> bool:
        """Inputs and results to their workflow's owner; to a volunteer, what a task it
        holds needs (its inputs, its image); everything to an admin."""
        if sha256 not in self._shareable:
            return False
        if caller.sees_everything:
            return True
        if "volunteer" in caller.kinds and await self._holders.wait_for(
            caller.node_id, lambda held: any(self._needs(task, sha256) for task in held)
        ):
            return True
        return caller.owner in await self._store.blob_owners(sha256)

    def _track(self, tasks: Iterable[WorkflowTask]) -> None:
        """Notes who holds each task now (see holders.holder_of); forgets what the attempts
        of a task no longer held sent."""
        for task in tasks:
            if task.validation is None:
                held = [(task.task_id, holder_of(task))]
            else:
                held = [
                    (copy_id(task.task_id, copy.number), copy_holder(copy))
                    for copy in task.validation.copies
                ]
            for task_id, holder in held:
                self._holders.set(task_id, holder)
                self._live.held(task_id, holder)
                if not holder:
                    self._uploads.pop(task_id, None)

    def _needs(self, task_id: str, sha256: str) -> bool:
        spec = self._specs.get(task_id)
        if spec is None:
            return False
        return any(ref.sha256 == sha256 for ref in spec.inputs) or (
            bool(spec.image_id) and self._archives.get(sha256) == spec.image_id
        )

    async def may_upload(self, sha256: str, size: int, purpose: str, caller: Caller) -> bool:
        """Input files people send with a workflow (purpose "input"); from a volunteer, the
        outputs of a task of ours it holds and that is still going (purpose
        "task_id:attempt"), within the disk the task asked for, and its stdout and stderr
        ("task_id:attempt:log"), LOG_BYTES each at most."""
        if purpose == "input":
            return bool(caller.kinds & PEOPLE)
        is_log = purpose.endswith(f":{LOG_PURPOSE}")
        if is_log:
            purpose = purpose.removesuffix(f":{LOG_PURPOSE}")
            if size > LOG_BYTES:
                return False
        task_id, _, attempt = purpose.rpartition(":")
        spec = self._specs.get(task_id)
        of_task, number = task_of(task_id)
        run = self._runs.get(spec.workflow_id) if spec else None
        task = run.tasks.get(of_task) if run else None
        if spec is None or task is None:
            return False
        if task.validation is None:
            going, running_attempt = not task.status.finished, task.attempts
        else:  # a copy runs on, to be judged, after its task is decided
            copy = task.validation.copy(number)
            going = copy is not None and copy.state.live
            running_attempt = copy.attempt if copy is not None else 0
        if not going:
            return False
        # All its outputs together, each counted once (a resumed upload is the same blob).
        sent = self._uploads.setdefault(task_id, {})
        cap = spec.resources.disk_mb * MIB if spec.resources.disk_mb else UNSIZED_OUTPUT_BYTES
        if not is_log and sum(sent.values()) - sent.get(sha256, 0) + size > cap:
            return False
        held = "volunteer" in caller.kinds and await self._holders.wait_for(
            caller.node_id, lambda tasks: task_id in tasks and str(running_attempt) == attempt
        )
        if held and not is_log:
            sent[sha256] = size
        return held

    # --- submission -----------------------------------------------------------------------

    async def submit(
        self,
        workflow_text: str,
        overrides: dict[str, str],
        files: Sequence[FileRef],
        inline: Sequence[tuple[FileRef, bytes]] = (),
        owner: str = "",
    ) -> Submitted:
        workflow = parse_workflow(workflow_text, overrides)
        async with self._references.reader:
            return await self._create(workflow, files, inline, owner)

    async def _create(
        self,
        workflow: WorkflowFile,
        files: Sequence[FileRef],
        inline: Sequence[tuple[FileRef, bytes]],
        owner: str,
    ) -> Submitted:
        prepared = await self._builder.prepare(workflow, files, inline)
        workflow_id, tasks, inputs = prepared.workflow_id, prepared.tasks, prepared.inputs
        if is_owner_name(owner):  # a person, not "node <id>": volunteers' allow_users
            tasks = [replace(new, spec=replace(new.spec, user=owner)) for new in tasks]
        await self._store.create_workflow(
            workflow_id,
            workflow.name,
            workflow.type,
            prepared.parameters,
            tasks,
            inputs,
            workflow.on_failure,
            owner,
        )
        async with self._lock:
            self._shareable |= {ref.sha256 for ref in inputs}
            for new in tasks:
                self._specs[new.spec.task_id] = new.spec
            run = WorkflowRun.of(
                workflow_id,
                [
                    WorkflowTask(
                        new.spec.task_id,
                        new.name,
                        new.depends_on,
                        new.upstream,
                        validation=new_validation(new.spec.task_id, new.validation),
                    )
                    for new in tasks
                ],
                workflow.on_failure,
            )
            self._runs[workflow_id] = run
            self._types[workflow_id] = workflow.type
            await self._hand_over_ready(run)
        log.info("workflow %s: %d tasks (%s)", workflow_id, len(tasks), workflow.type)
        return Submitted(workflow_id, len(tasks), prepared.estimated_seconds_per_task)

    async def _pool(self) -> list[Volunteer] | None:
        return await self.coordinator.volunteers() if self.coordinator else None

    async def image_archive(self, image: str, image_id: str, caller: Caller) -> FileRef:
        """The image as a blob, for a volunteer that holds a task run in it."""
        if not caller.sees_everything and not await self._holders.wait_for(
            caller.node_id,
            lambda held: any(self._specs[t].image_id == image_id for t in held if t in self._specs),
        ):
            raise AccessDeniedError(
                f"image {image} is served only to volunteers holding a task that runs in it"
            )
        archive = await self._images.archive(image, image_id)
        self._archives[archive.sha256] = image_id
        self._shareable.add(archive.sha256)
        return archive

    async def _hand_over_ready(self, run: WorkflowRun) -> None:
        startable: list[WorkflowTask] = []
        ended: list[WorkflowTask] = []
        for task in run.take_ready():
            try:
                if task.upstream:
                    await self._resolve_upstream(run, task)
            except MissingUpstreamError as error:
                log.error(
                    "workflow %s: task %s cannot start: %s", run.workflow_id, task.name, error
                )
                ended += run.fail(task, f"cannot start: {error}")
                continue
            if task.validation is not None and not task.validation.copies:
                task.validation.start()
            startable.append(task)
        if startable or ended:
            # One transaction for a whole first wave.
            await self._store.save_tasks([*startable, *ended])
        for task in ended:
            await self._publish(run, task.task_id, task.status.value, task.message)
        await self._submit(startable)

    async def _submit(self, tasks: Sequence[WorkflowTask]) -> None:
        """Hands tasks to the coordinator, their small inputs inline."""
        if not tasks or self.coordinator is None:
            return
        specs = []
        for task in tasks:
            if task.validation is None:
                specs.append(self._specs[task.task_id])
            else:
                live = [c for c in self._register_copies(task) if c.state.live]
                specs += [self._specs[copy_id(task.task_id, c.number)] for c in live]
        chosen = [_inline_choice(spec) for spec in specs]
        # One read for the whole wave: a sweep's tasks share their small script and wrapper.
        contents = await self._blobs.read_small({sha for shas in chosen for sha in shas})
        self.coordinator.submit(
            [
                _with_inline_inputs(spec, shas, contents)
                for spec, shas in zip(specs, chosen, strict=True)
            ]
        )

    def _register_copies(self, task: WorkflowTask) -> list[Copy]:
        """Makes each copy's spec from the task's (a copy's own id, kept apart from the
        volunteers of the others); returns the copies."""
        if task.validation is None:
            return []
        base = self._specs.get(task.task_id)
        if base is None:
            return []
        for copy in task.validation.copies:
            others = tuple(
                dict.fromkeys(
                    c.volunteer_id
                    for c in task.validation.copies
                    if c.volunteer_id and c.number != copy.number
                )
            )
            the_copy = copy_id(task.task_id, copy.number)
            self._specs[the_copy] = replace(
                base, task_id=the_copy, replica_of=task.task_id, avoid_volunteers=others
            )
        return task.validation.copies

    async def _resolve_upstream(self, run: WorkflowRun, task: WorkflowTask) -> None:
        """Adds the outputs this task reads from its dependencies to its inputs; they are
        blobs here already (verified when their producer completed)."""
        files = run.upstream_files(task)
        spec = self._specs[task.task_id]
        names = {ref.name for ref in files}
        # Idempotent: a restart between here and save_task resolves the task again.
        own = tuple(ref for ref in spec.inputs if ref.name not in names)
        spec = replace(spec, inputs=own + files)
        self._specs[task.task_id] = spec
        self._shareable |= {ref.sha256 for ref in files}
        await self._store.save_upstream_inputs(spec, files)

    # --- following the coordinator --------------------------------------------------------

    async def last_sequence(self) -> int:
        return int(await self._store.meta(COORDINATOR_SEQUENCE) or 0)

    async def _kept_logs(self, result: TaskResult) -> TaskResult:
        """The result with the logs that arrived whole, stored; those that did not are
        said so in its note (a log never fails a task)."""
        if not result.logs:
            return result
        try:
            carried = inline.verified(result.logs, result.inline_outputs)
        except inline.InlineBlobError:
            carried = {}
        kept = await self._arrived(result.logs, carried)
        try:
            await self._blobs.make_durable([ref.sha256 for ref in kept])
        except OSError as error:
            log.error("task %s: its logs cannot be kept: %s", result.task_id, error)
            kept = []
        lost = [f"{ref.name} did not arrive" for ref in result.logs if ref not in kept]
        note = "; ".join(filter(None, [result.log_note, *lost]))
        return replace(result, logs=tuple(kept), log_note=note)

    async def _arrived(self, refs: Sequence[FileRef], carried: dict[str, bytes]) -> list[FileRef]:
        """Those of `refs` that are here whole, once the bytes carried inline are stored
        (together: the store syncs blobs published at once in one round). Called under the
        lock, by an event about to refer to them: a delete under way keeps them."""
        shas = {ref.sha256 for ref in refs}
        self._freeing -= shas
        if self._referred is not None:
            self._referred |= shas
        await asyncio.gather(*(self._blobs.put_bytes(content) for content in carried.values()))
        intact = []
        for ref in refs:
            try:
                if await self._blobs.size(ref.sha256) == ref.size:
                    intact.append(ref)
            except NotFoundError:
                pass
        return intact

    async def on_event(self, event: TaskEvent) -> None:
        if event.kind is EventKind.DECLINED and event.volunteer_id:
            declines = self._declines.setdefault(task_of(event.task_id)[0], {})
            declines[event.volunteer_id] = event.message
        async with self._lock:
            run = self._runs.get(event.workflow_id)
            if run is not None:
                try:
                    if event.result is not None and event.result.logs:
                        event = replace(event, result=await self._kept_logs(event.result))
                    await self._keep_attempt(run, event)
                    if await self._apply(run, event):
                        return
                except Exception as error:
                    # One event must not stop the manager following the others, nor its
                    # restart (which would meet the event again): its workflow fails.
                    log.exception("workflow %s: an event of %s broke it", run.workflow_id, event)
                    reason = f"the manager could not handle task {event.task_id}: {error!r}"
                    await self._call_off(run, WorkflowState.FAILED, reason)
            await self._store.set_meta(COORDINATOR_SEQUENCE, str(event.sequence))

    async def _apply(self, run: WorkflowRun, event: TaskEvent) -> bool:
        """Applies the event to its run; False when it changed nothing there."""
        of_task, number = task_of(event.task_id)
        task = run.tasks.get(of_task)
        if task is not None and task.validation is not None:
            return await self._apply_to_copy(run, task, number, event)
        if number != 1:
            return False
        return await self._apply_to_task(run, event)

    async def _apply_to_copy(
        self, run: WorkflowRun, task: WorkflowTask, number: int, event: TaskEvent
    ) -> bool:
        """An event about one copy of a replicated task: the copy moves, and what its
        validation decides reaches the task (and the coordinator)."""
        validation = task.validation
        assert validation is not None
        decision = Decision()
        kind = event.kind
        forward: TaskEvent | None = None
        if kind is EventKind.FETCHING:
            validation.fetching(number, event.volunteer_id, event.attempt)
        elif kind is EventKind.RUNNING:
            validation.running(number, event.volunteer_id, event.attempt)
        elif kind is EventKind.PROGRESS:
            forward = event
        elif kind in (EventKind.DECLINED, EventKind.REQUEUED):
            validation.handed_back(number)
            forward = event if number == 1 else None
        elif kind is EventKind.UNSCHEDULABLE:
            decision = validation.unschedulable(number)
            forward = event if number == 1 or not decision.accept else None
            if forward is not None and number != 1:
                forward = replace(forward, message=f"copy {number}: {forward.message}")
        elif kind in (EventKind.QUEUED, EventKind.OFFERED):
            forward = event if number == 1 else None
        elif kind is EventKind.COMPLETED:
            decision = await self._judge(run, task, number, event)
        elif kind is EventKind.FAILED:
            decision = validation.failed_copy(number, event.result, event.message)
        elif kind is EventKind.CANCELLED:
            validation.cancelled(number)
            if number == 1 and not validation.decided:
                forward = event
        changed: list[WorkflowTask] = []
        if forward is not None:
            changed += self._forward(run, replace(forward, task_id=task.task_id))
        changed += await self._carry_out(run, task, decision, event)
        shown: str = kind
        # Whichever copy moved (held, handed back, ended with another still to check it),
        # the task stands as its copies do now.
        if run.follow_copies(task):
            changed.append(task)
            shown = task.status.value
        self._track([task])
        if not changed:
            # Only the copy moved: its record, and the event as followed.
            await self._store.save_tasks([task], event.sequence)
            return True
        now = run.state()
        await self._store.save_tasks(
            list({t.task_id: t for t in (task, *changed)}.values()),
            event.sequence,
            (run.workflow_id, now.value) if not run.finished else None,
        )
        await self._publish(run, task.task_id, shown, task.message)
        await self._hand_over_ready(run)
        if run.finished:
            await self._finish(run)
        return True

    def _forward(self, run: WorkflowRun, event: TaskEvent) -> list[WorkflowTask]:
        applied = run.apply(event)
        if applied is None:
            return []
        self._track(applied.changed)
        return list(applied.changed)

    async def _judge(
        self, run: WorkflowRun, task: WorkflowTask, number: int, event: TaskEvent
    ) -> Decision:
        """A copy completed: which answer it gives, and whether its volunteer's word may
        stand alone."""
        validation = task.validation
        assert validation is not None
        result = event.result
        if result is None or not await self._outputs_arrived(event):
            return validation.failed_copy(
                number, result, "its outputs did not arrive intact at the manager"
            )
        result = replace(result, inline_outputs=())
        kind = self._types.get(run.workflow_id, EXPLICIT_TYPE)
        splitter = None if kind == EXPLICIT_TYPE else get_splitter(kind)
        answers = [c.result for c in validation.answers() if c.result is not None]
        answer = await answer_of(result, answers, self._blobs, splitter)
        policy = validation.policy
        trusted = event.trust is not None and event.trust.trusted(policy.trust_threshold)
        spot_check = self._draw(event.task_id, result.attempt) < policy.spot_check_rate
        if (copy := validation.copy(number)) is not None and event.trust is not None:
            copy.probation = event.trust.on_probation
        return validation.completed(number, event.volunteer_id, result, answer, trusted, spot_check)

    def _draw(self, copy_task_id: str, attempt: int) -> float:
        """The spot check's draw for a copy's result, in [0, 1): unpredictable without this
        manager's secret, and the same when a restart meets the event again."""
        digest = hmac.digest(
            self._spot_check_secret, f"{copy_task_id}:{attempt}".encode(), "sha256"
        )
        return int.from_bytes(digest[:8], "big") / 2**64

    async def _carry_out(
        self, run: WorkflowRun, task: WorkflowTask, decision: Decision, event: TaskEvent
    ) -> list[WorkflowTask]:
        """Does what a validation decided; returns the tasks that changed in the run."""
        if decision.judged:
            if self.coordinator is not None:
                self.coordinator.report(_verdicts(task, decision.judged))
            for caught in {
                c.volunteer_id for c in decision.judged if c.verdict is CopyVerdict.DISAGREED
            }:
                await self._recheck(caught)
        if self.coordinator is not None and decision.cancel:
            self.coordinator.cancel_tasks(
                run.workflow_id, [copy_id(task.task_id, n) for n in decision.cancel]
            )
        if decision.submit:
            await self._submit_copies(task, decision.submit)
        verdict: TaskEvent | None = None
        if decision.accept is not None and decision.accept.result is not None:
            copy = decision.accept
            assert copy.result is not None
            verdict = replace(
                event,
                task_id=task.task_id,
                kind=EventKind.COMPLETED,
                volunteer_id=copy.volunteer_id,
                result=replace(copy.result, task_id=task.task_id),
                message="",
            )
        elif decision.fail:
            verdict = replace(
                event, task_id=task.task_id, kind=EventKind.FAILED, message=decision.fail
            )
        return self._forward(run, verdict) if verdict is not None else []

    async def _recheck(self, volunteer_id: str) -> None:
        """A volunteer was caught disagreeing: its answers that stood unchecked (it was
        trusted) in workflows still going are checked after all, where nothing has read
        them yet."""
        for run in list(self._runs.values()):
            if run.workflow_id in self._merges:
                continue
            reopened = []
            for task in run.tasks.values():
                validation = task.validation
                standing = validation.copy(validation.accepted) if validation else None
                if (
                    validation is None
                    or standing is None
                    or standing.volunteer_id != volunteer_id
                    or standing.verdict is not CopyVerdict.UNCHECKED
                    or not run.reopen(task, "re-checked: its volunteer was caught disagreeing")
                ):
                    continue
                decision = validation.reopen()
                await self._submit_copies(task, decision.submit)
                reopened.append(task)
            if reopened:
                log.warning(
                    "workflow %s: %d results of volunteer %s stood unchecked; checking them",
                    run.workflow_id,
                    len(reopened),
                    volunteer_id[:12],
                )
                self._track(reopened)
                await self._store.forget_outputs([t.task_id for t in reopened])
                await self._store.save_tasks(reopened)

    async def _submit_copies(self, task: WorkflowTask, numbers: Sequence[int]) -> None:
        if self.coordinator is None:
            return
        self._register_copies(task)
        wanted = {copy_id(task.task_id, n) for n in numbers}
        chosen_specs = [self._specs[t] for t in sorted(wanted)]
        chosen = [_inline_choice(spec) for spec in chosen_specs]
        contents = await self._blobs.read_small({sha for shas in chosen for sha in shas})
        self.coordinator.submit(
            [
                _with_inline_inputs(spec, shas, contents)
                for spec, shas in zip(chosen_specs, chosen, strict=True)
            ]
        )

    async def _apply_to_task(self, run: WorkflowRun, event: TaskEvent) -> bool:
        """An event about a task that is not replicated."""
        verified = event.kind is not EventKind.COMPLETED or await self._outputs_arrived(event)
        if event.result is not None and event.result.inline_outputs:
            # Stored as blobs now; the task's record keeps only their refs.
            event = replace(event, result=replace(event.result, inline_outputs=()))
        was = run.state()
        applied = run.apply(event, outputs_verified=verified)
        if applied is None:
            return False
        self._track(applied.changed)
        # queued -> running shows here; the end is written by _finish.
        now = run.state()
        moved = (run.workflow_id, now.value) if now != was and not run.finished else None
        await self._store.save_tasks(list(applied.changed), event.sequence, moved)
        await self._publish(run, event.task_id, event.kind, applied.task.message)
        await self._hand_over_ready(run)
        if run.finished:
            await self._finish(run)
        return True

    async def _call_off(self, run: WorkflowRun, state: WorkflowState, message: str) -> int:
        """Ends a workflow before its time (cancelled, or unable to go on): what it has left
        is called off here and at the coordinator; returns how many tasks the coordinator
        held."""
        held = run.cancel()
        self._track(held)
        await self._store.save_tasks(list(run.tasks.values()))
        if held and self.coordinator is not None:
            self.coordinator.cancel(run.workflow_id)
        await self._end(run.workflow_id, state, message)
        return len(held)

    async def _outputs_arrived(self, event: TaskEvent) -> bool:
        """Volunteers upload outputs before reporting, or carry small ones inline; each
        must be here, whole, and on stable storage before the task is recorded as having
        them."""
        if event.result is None:
            return False
        spec = self._specs.get(event.task_id)
        names = [ref.name for ref in event.result.outputs]
        problem = outputs_problem(spec.outputs, names) if spec is not None else None
        if problem is not None:  # the coordinator refuses such results; its store may not
            log.warning("task %s: its result %s", event.task_id, problem)
            return False
        try:
            carried = inline.verified(event.result.outputs, event.result.inline_outputs)
        except inline.InlineBlobError as error:
            log.warning("task %s: %s", event.task_id, error)
            return False
        arrived = await self._arrived(event.result.outputs, carried)
        for ref in event.result.outputs:
            if ref not in arrived:
                log.warning("task %s: output %s did not arrive intact", event.task_id, ref.name)
                return False
        try:
            await self._blobs.make_durable([ref.sha256 for ref in event.result.outputs])
        except OSError as error:
            log.error("task %s: outputs cannot be kept: %s", event.task_id, error)
            return False
        return True

    async def _finish(self, run: WorkflowRun) -> None:
        state = run.state()
        if state is WorkflowState.COMPLETED:
            await self._store.set_workflow_state(run.workflow_id, WorkflowState.MERGING.value)
            await self._publish(run, "", "merging", "all tasks completed; merging results")
            self._start_merge(run.workflow_id)
            return
        await self._end(run.workflow_id, state, "")

    def _start_merge(self, workflow_id: str) -> None:
        merge = self._supervisor.spawn(self._merge(workflow_id), f"merge of {workflow_id}")
        self._merges[workflow_id] = merge

        def forget(ended: asyncio.Task[None]) -> None:
            if self._merges.get(workflow_id) is ended:  # not a later merge (after a resume)
                del self._merges[workflow_id]

        merge.add_done_callback(forget)

    async def _merge(self, workflow_id: str) -> None:
        run = self._runs[workflow_id]
        try:
            if self._types[workflow_id] == EXPLICIT_TYPE:
                # Nothing to merge: every task's outputs are the results, each in a folder
                # named after its task (two tasks may write files of the same name).
                results = [
                    replace(ref, name=f"{task.name}/{ref.name}")
                    for task in run.tasks.values()
                    for ref in task.outputs
                ]
                await self._store.add_results(workflow_id, results)
                self._shareable |= {ref.sha256 for ref in results}
                await self._end(workflow_id, WorkflowState.COMPLETED, "")
                return
            splitter = get_splitter(self._types[workflow_id])
            outputs = {
                task.name: {ref.name: await self._blobs.path(ref.sha256) for ref in task.outputs}
                for task in run.tasks.values()
            }
            merged = await asyncio.to_thread(
                _merge, splitter, outputs, self._workdir / workflow_id / "merge"
            )
            results = []
            for path in merged:
                sha256, size = await self._blobs.put_file(path)
                results.append(FileRef(path.name, sha256, size))
        except Exception as error:
            # Whatever broke it (a splitter's result of the wrong shape, say), the merge
            # ends its workflow, not the manager: a restart would only merge and fail again.
            log.error(
                "workflow %s: merge failed: %s",
                workflow_id,
                error,
                exc_info=None if isinstance(error, NodeError | OSError) else error,
            )
            await self._end(workflow_id, WorkflowState.FAILED, f"merge failed: {error}")
            return
        await self._store.add_results(workflow_id, results)
        self._shareable |= {ref.sha256 for ref in results}
        await self._end(workflow_id, WorkflowState.COMPLETED, "")

    async def _end(self, workflow_id: str, state: WorkflowState, message: str) -> None:
        await self._store.set_workflow_state(workflow_id, state.value, message)
        run = self._runs.pop(workflow_id)
        self._live.workflow_ended(workflow_id)
        # An ended workflow lives in the store only (`resume` loads it back from there).
        self._types.pop(workflow_id, None)
        live = False
        for task in run.tasks.values():
            self._specs.pop(task.task_id, None)
            self._declines.pop(task.task_id, None)
            for copy in _copies(task):
                self._specs.pop(copy_id(task.task_id, copy.number), None)
                live = live or copy.state.live
        if live and self.coordinator is not None:
            # Copies still out (checking a decided task) are of no use any more.
            self.coordinator.cancel(workflow_id)
        log.info("workflow %s %s%s", workflow_id, state.value, f": {message}" if message else "")
        await self._publish(run, "", state.value, message)
        for queue in self._watchers.pop(workflow_id, set()):
            queue.put_nowait(None)

    # --- what clients ask -----------------------------------------------------------------

    async def cancel(self, workflow_id: str) -> int:
        async with self._lock:
            run = self._runs.get(workflow_id)
            if run is None:
                state = await self._store.workflow_state(workflow_id)
                if state is None:
                    raise NotFoundError(f"no workflow {workflow_id!r} on this manager")
                raise RejectedError(
                    f"workflow {workflow_id} has ended ({state}): nothing to cancel"
                )
            if workflow_id in self._merges:
                # Every task completed; the merge ends it in a moment, one way or the other.
                raise RejectedError(
                    f"workflow {workflow_id} is merging its results: too late to cancel"
                )
            return await self._call_off(run, WorkflowState.CANCELLED, "cancelled by the user")

    async def collect_orphans(self, older_than_seconds: float) -> int:
        """Deletes the blobs no record refers to that arrived over `older_than_seconds` ago:
        inputs uploaded for a submission that never came, outputs of attempts that never
        reported. Returns how many it deleted."""
        async with self._references.writer:  # no submission may refer to one meanwhile
            async with self._lock:  # no event is half way through referring to one
                self._referred = set()
            try:
                referenced = await self._store.referenced_blobs()
                cutoff = time.time() - older_than_seconds
                orphans = {
                    blob.sha256
                    for blob in await self._blobs.held()
                    if blob.sha256 not in referenced and blob.modified < cutoff
                }
                async with self._lock:
                    self._freeing = orphans - self._referred
            finally:
                self._referred = None
            deleted = [sha256 for sha256, here in await self._free() if here]
        if deleted:
            log.info("deleted %d blobs nothing refers to", len(deleted))
        return len(deleted)

    async def delete(self, workflow_id: str) -> Deleted:
        """Forgets an ended workflow and frees the blobs only it used (its inputs, outputs
        and results); files other workflows use stay. Refused while it is going."""
        # Exclusive of submissions and resumes (they refer to blobs), not of events: the
        # blobs of a large workflow take seconds to remove (see _free).
        async with self._references.writer:
            async with self._lock:
                if workflow_id in self._runs:
                    raise RejectedError(
                        f"workflow {workflow_id} is still going; cancel it first "
                        f"(node cancel {workflow_id})"
                    )
                if await self._store.workflow_state(workflow_id) is None:
                    raise NotFoundError(f"no workflow {workflow_id!r} on this manager")
                freeing = await self._store.blobs_only_of(workflow_id)
                sizes = {ref.sha256: ref.size for ref in freeing}
                self._freeing = set(sizes)
            # Blobs before records: a crash in between leaves a delete to run again, never
            # blobs that nothing refers to.
            freed = [sha256 for sha256, _ in await self._free()]
            await self._store.forget_workflow(workflow_id)
            await asyncio.to_thread(shutil.rmtree, self._workdir / workflow_id, True)
        deleted = Deleted(workflow_id, len(freed), sum(sizes[sha256] for sha256 in freed))
        log.info(
            "workflow %s deleted: %d blobs, %.1f MiB freed",
            workflow_id,
            deleted.blobs,
            deleted.freed_bytes / 2**20,
        )
        return deleted

    async def _free(self) -> list[tuple[str, bool]]:
        """Deletes the blobs in `_freeing`, FREE_BATCH at a time, each batch under the lock:
        an event that came to refer to one of them meanwhile took it out of `_freeing`
        first, and no event refers to one while its batch goes. Returns each blob it let go
        of, and whether it was here. The caller holds the references' writer lock."""
        let_go: list[tuple[str, bool]] = []
        try:
            while self._freeing:
                async with self._lock:
                    count = min(FREE_BATCH, len(self._freeing))
                    chosen = [self._freeing.pop() for _ in range(count)]
                    self._shareable -= set(chosen)
                    here = set(await self._blobs.delete_many(chosen))
                let_go += [(sha256, sha256 in here) for sha256 in chosen]
        finally:
            self._freeing = set()
        return let_go

    async def resume(self, workflow_id: str) -> Submitted:
        """Runs again what did not complete of an ended workflow; the tasks that did keep
        their outputs. Each task run again gets a new run number, which the coordinator
        takes as a fresh start."""
        async with self._references.reader, self._lock:
            if workflow_id in self._runs:
                raise RejectedError(
                    f"workflow {workflow_id} is still going; resume it once it has ended"
                )
            stored = await self._store.run(workflow_id)
            if stored is None:
                raise NotFoundError(f"no workflow {workflow_id!r} on this manager")
            if stored.state == WorkflowState.COMPLETED.value:
                raise RejectedError(f"workflow {workflow_id} completed: nothing to resume")
            run = WorkflowRun.of(workflow_id, stored.tasks, stored.on_failure)
            again = run.resume()
            self._track(again)
            self._runs[workflow_id] = run
            self._types[workflow_id] = stored.type
            self._specs.update(stored.specs)
            for task in again:
                spec = self._specs[task.task_id]
                self._specs[task.task_id] = replace(spec, run=spec.run + 1)
            await self._store.rerun_tasks(again, [self._specs[t.task_id] for t in again])
            log.info("workflow %s: resuming %d tasks", workflow_id, len(again))
            if again:
                await self._store.set_workflow_state(workflow_id, run.state().value)
                await self._hand_over_ready(run)
            else:  # every task completed before: only the merge failed
                await self._finish(run)
        return Submitted(workflow_id, len(again))

    async def explain(self, workflow_id: str, task: str = "") -> tuple[list[TaskExplanation], str]:
        """Why the workflow's queued tasks (or the one named) are not running, against each
        volunteer of the pool; and, when the pool cannot be asked now, why not."""
        run = self._runs.get(workflow_id)
        if run is None:
            state = await self._store.workflow_state(workflow_id)
            if state is None:
                raise NotFoundError(f"no workflow {workflow_id!r} on this manager")
            raise RejectedError(f"workflow {workflow_id} has ended ({state}): nothing waits")
        if task:
            chosen = [t for t in run.tasks.values() if task in (t.task_id, t.name)]
            if not chosen:
                raise NotFoundError(f"workflow {workflow_id} has no task {task[:80]!r}")
        else:
            waiting = (TaskStatus.QUEUED, TaskStatus.WAITING)
            chosen = [t for t in run.tasks.values() if t.status in waiting]
        volunteers = await self.coordinator.volunteers() if self.coordinator else None
        unknown = "" if volunteers is not None else "the coordinator does not answer now"
        return [self._explain(run, t, volunteers or []) for t in chosen], unknown

    def _explain(
        self, run: WorkflowRun, task: WorkflowTask, volunteers: list[Volunteer]
    ) -> TaskExplanation:
        groups: list[ReasonGroup] = []
        if task.status is TaskStatus.WAITING:
            pending = [
                name
                for name in task.depends_on
                if run.by_name[name].status is not TaskStatus.COMPLETED
            ]
            groups = [ReasonGroup(f"waits for {', '.join(pending)} to complete")]
        elif (
            task.status is TaskStatus.FETCHING
            and task.volunteer_id
            and not any(c.state is CopyState.QUEUED for c in _copies(task))
        ):
            groups = why_fetching(task.volunteer_id)
        else:
            # A replicated task waits on its queued copy, if any (it names whom to avoid).
            queued = [
                copy_id(task.task_id, c.number)
                for c in _copies(task)
                if c.state is CopyState.QUEUED
            ]
            spec = self._specs.get(queued[0] if queued else task.task_id)
            if spec is not None and (queued or task.status is TaskStatus.QUEUED):
                declines = self._declines.get(task.task_id, {})
                groups = why_waiting(spec, volunteers, declines)
        return TaskExplanation(
            task.task_id, task.name, task.status.value, task.message, tuple(groups)
        )

    async def task_log(self, workflow_id: str, task: str, stream: str, attempt: int = 0) -> TaskLog:
        """What the task (by name or id, or a copy: TASK~N) wrote to `stream` in that
        attempt; without one, in the result that stands, else in its latest attempt."""
        return await self._logs.task_log(workflow_id, task, stream, attempt)

    def follow_log(self, workflow_id: str, task: str, stream: str) -> AsyncGenerator[Piece, None]:
        """The task's log as it is written, until the task ends (see task_logs)."""
        return self._logs.follow(workflow_id, task, stream)

    async def push_log(
        self,
        caller: Caller,
        task_id: str,
        attempt: int,
        chunks: Sequence[LogChunk],
        final: bool,
    ) -> bool:
        """New output of a running attempt, from the volunteer that runs it and from no
        other; returns whether someone follows the task."""
        if len({chunk.stream for chunk in chunks}) != len(chunks) or any(
            chunk.stream not in STREAMS or chunk.offset < 0 for chunk in chunks
        ):
            raise InvalidInputError(
                "a log push holds at most one chunk of stdout and one of stderr, each at an "
                "offset from 0"
            )
        spec = self._specs.get(task_id)
        if (
            spec is None
            or "volunteer" not in caller.kinds
            or not await self._holders.wait_for(
                caller.node_id,
                lambda held: task_id in held and self._held_attempt(task_id) == attempt,
            )
        ):
            raise AccessDeniedError(
                f"{caller.describe()} does not run attempt {attempt} of task {task_id[:80]!r}: "
                "only the volunteer running a task sends its log"
            )
        return self._live.push(spec.workflow_id, task_id, attempt, caller.node_id, chunks, final)

    def _held_attempt(self, task_id: str) -> int:
        """The attempt of the task (or copy) a volunteer holds now; 0 when none is held."""
        spec = self._specs.get(task_id)
        run = self._runs.get(spec.workflow_id) if spec is not None else None
        of_task, number = task_of(task_id)
        task = run.tasks.get(of_task) if run is not None else None
        if task is None:
            return 0
        if task.validation is None:
            return task.attempts if not task.status.finished else 0
        copy = task.validation.copy(number)
        return copy.attempt if copy is not None and copy.state.live else 0

    def _unit_now(self, unit: LogUnit) -> Unit | None:
        """How a task (or copy) followed by `vcnode logs -f` stands; None once its workflow
        ended. TASK alone ends with the task, whichever copies it waits on."""
        run = self._runs.get(unit.workflow_id)
        task = run.tasks.get(unit.task.task_id) if run is not None else None
        if task is None:
            return None
        status, message = task.status, task.message
        if task.validation is None:
            running = task.attempts if status is TaskStatus.RUNNING else 0
            return Unit(running, task.volunteer_id, status.finished, status.value, message)
        copy = task.validation.copy(unit.number)
        if copy is None:  # none yet (the task runs again from scratch): it may come
            return Unit(0, "", status.finished, status.value, message)
        running = copy.attempt if copy.state is CopyState.RUNNING else 0
        if unit.number == 1:
            return Unit(running, copy.volunteer_id, status.finished, status.value, message)
        error = copy.result.error if copy.result is not None else ""
        return Unit(running, copy.volunteer_id, not copy.state.live, copy.state.value, error)

    async def _keep_attempt(self, run: WorkflowRun, event: TaskEvent) -> None:
        """An attempt of a task of `run` ended with a result: its logs are kept, whatever
        comes of the task (`vcnode logs --attempt N`)."""
        result = event.result
        if (
            result is not None
            and result.attempt == event.attempt  # not a result of an earlier attempt, again
            and event.kind in (EventKind.COMPLETED, EventKind.FAILED, EventKind.REQUEUED)
            and task_of(event.task_id)[0] in run.tasks
        ):
            await self._store.save_attempt(
                run.workflow_id, event.task_id, event.volunteer_id, result
            )

    async def watch(self, workflow_id: str, since: float = 0.0) -> AsyncIterator[WorkflowUpdate]:
        """Updates until the workflow ends; for one that has, its history replayed (each
        task's end, then its own), from `since` on."""
        queue: asyncio.Queue[WorkflowUpdate | None] = asyncio.Queue()
        async with self._lock:
            run = self._runs.get(workflow_id)
            if run is not None:
                self._watchers.setdefault(workflow_id, set()).add(queue)
                queue.put_nowait(self._update(run, "", "status", ""))
        if run is None:  # ended (the lock is not held while a client reads)
            async for past in self._replay(workflow_id, since):
                yield past
            return
        try:
            while (update := await queue.get()) is not None:
                yield update
        finally:
            self._watchers.get(workflow_id, set()).discard(queue)

    async def _replay(self, workflow_id: str, since: float) -> AsyncIterator[WorkflowUpdate]:
        found = await self._store.workflows(workflow_id)
        if not found:
            return
        status = found[0]
        tally: Counter[str] = Counter()
        total = len(status.tasks)
        for task_id, state, message, at in await self._store.history(workflow_id):
            tally[state] += 1
            if at >= since:
                counts = workflow_counts({**tally, "queued": total - tally.total(), "total": total})
                yield WorkflowUpdate(workflow_id, task_id, state, message, at, counts)
        if status.updated_at >= since:
            yield WorkflowUpdate(
                workflow_id, "", status.state, status.error, status.updated_at, status.counts
            )

    async def _publish(self, run: WorkflowRun, task_id: str, kind: str, message: str) -> None:
        update = self._update(run, task_id, kind, message)
        for queue in self._watchers.get(run.workflow_id, ()):
            queue.put_nowait(update)
        for listener in self.listeners:
            listener(update)

    @staticmethod
    def _update(run: WorkflowRun, task_id: str, kind: str, message: str) -> WorkflowUpdate:
        return WorkflowUpdate(
            run.workflow_id, task_id, kind, message, time.time(), workflow_counts(run.counts())
        )

    def active_counts(self) -> Counter[str]:
        """Tasks per status over the workflows not ended (the dashboard and /metrics)."""
        total: Counter[str] = Counter()
        for run in self._runs.values():
            total.update(run.counts())
        return total

    async def stop(self) -> None:
        """Merges were cancelled with the role's other background work."""
        await self._images.close()
        self._live.close()
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)


def _copies(task: WorkflowTask) -> list[Copy]:
    return task.validation.copies if task.validation is not None else []


def _verdicts(task: WorkflowTask, copies: Iterable[Copy]) -> list[Verdict]:
    """The coordinator's form of the verdicts on these copies; a copy that stood alone
    unchecked says only that no verdict is coming, and only when its volunteer waits for
    that (on probation): a trusted volunteer's copies cost the coordinator nothing."""
    return [
        Verdict(
            copy_id(task.task_id, copy.number),
            copy.attempt,
            copy.volunteer_id,
            copy.verdict is CopyVerdict.AGREED,
            checked=copy.verdict is not CopyVerdict.UNCHECKED,
        )
        for copy in copies
        if copy.verdict in (CopyVerdict.AGREED, CopyVerdict.DISAGREED)
        or (copy.verdict is CopyVerdict.UNCHECKED and copy.probation)
    ]


def copy_holder(copy: Copy) -> str:
    """Who holds a copy now (see holders.holder_of)."""
    return copy.volunteer_id if copy.state.held else ""


def _inline_choice(spec: TaskSpec) -> list[str]:
    """The blobs of the task's inputs that travel inside its offer (each once)."""
    fits = inline.pick([ref.size for ref in spec.inputs])
    return list(
        dict.fromkeys(r.sha256 for r, small in zip(spec.inputs, fits, strict=True) if small)
    )


def _with_inline_inputs(spec: TaskSpec, chosen: list[str], contents: dict[str, bytes]) -> TaskSpec:
    if not chosen or any(sha256 not in contents for sha256 in chosen):
        return spec  # nothing small, or missing: the volunteer's fetch will say which input
    return replace(spec, inline_inputs=tuple(InlineBlob(sha, contents[sha]) for sha in chosen))


def _merge(splitter: Splitter, outputs: dict[str, dict[str, Path]], workdir: Path) -> list[Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    return run_step(splitter, "merge", lambda: splitter.merge(outputs, workdir))
