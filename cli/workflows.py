"""`node submit`, `node status WORKFLOW`, `node watch`, `node results`, `node cancel`,
`node workflows`: gRPC clients of a manager daemon."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import grpc

from cli import views
from cli.rpc import connected
from cli.workflow_file import local_files, located, read_workflow
from daemon.backoff import Backoff
from daemon.errors import InvalidInputError, NodeError, UnreachableError
from daemon.models import FileRef, Submitted, TaskStatusRow, WorkflowCounts, WorkflowStatus
from daemon.rpc.v1 import manager_pb2, manager_pb2_grpc
from daemon.task_files import file_name_problem
from daemon.transfer.client import download, upload
from daemon.transfer.hashing import sha256_file
from daemon.transport import convert
from daemon.transport.caps import INLINE_FILE_BYTES
from daemon.transport.channels import Dial

CALL_TIMEOUT_SECONDS = 30.0
# The manager splits a workflow and stores its inputs before it answers: about 5 ms a task
# on the machines measured, so a sweep of tens of thousands of points takes minutes.
SUBMIT_TIMEOUT_SECONDS = 1800.0
# Deleting removes a file per input and output, about 1 ms each on the machines measured.
DELETE_TIMEOUT_SECONDS = 600.0
INPUT_PURPOSE = "input"
# Input files up to this size travel inside SubmitWorkflow, up to this much in all (the
# message limit is 16 MiB).
INLINE_TOTAL_BYTES = 8 * 1024 * 1024
PARALLEL_UPLOADS = 4
FINAL_STATES = {"completed", "failed", "cancelled"}
# How long `submit --wait` waits for a manager that went away (a restart) to come back.
RECONNECT_SECONDS = 600.0


def _stub(channel: grpc.aio.Channel) -> manager_pb2_grpc.ManagerServiceAsyncStub:
    return manager_pb2_grpc.ManagerServiceStub(channel)


@asynccontextmanager
async def manager_at(peer: Dial) -> AsyncIterator[manager_pb2_grpc.ManagerServiceAsyncStub]:
    async with connected(peer, "manager") as channel:
        yield _stub(channel)


async def _workflow_status(
    manager: manager_pb2_grpc.ManagerServiceAsyncStub, workflow_id: str, task: str = ""
) -> WorkflowStatus:
    reply = await manager.GetWorkflowStatus(
        manager_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, task=task),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    return convert.workflow_status_from_proto(reply)


async def submit(peer: Dial, args: argparse.Namespace) -> int:
    if (args.workflow is None) == (args.resume is None):
        raise InvalidInputError(
            "give a workflow file, or --resume WORKFLOW_ID for one that ended (not both)"
        )
    if args.resume is not None:
        if args.set:
            raise InvalidInputError("--set applies to a new workflow, not to --resume")
        async with manager_at(peer) as manager:
            reply = await manager.ResumeWorkflow(
                manager_pb2.ResumeWorkflowRequest(workflow_id=args.resume),
                timeout=SUBMIT_TIMEOUT_SECONDS,
            )
            resumed = convert.submitted_from_proto(reply)
            return await _after_submit(manager, resumed, args, "resumed")
    text, overrides, workflow = read_workflow(args)
    # Files the workflow reads travel first, as blobs; the manager finds them by name.
    with located(text, args.workflow):
        to_upload = local_files(workflow, args.workflow.parent)
    inline, files = await _send_inputs(peer, to_upload)
    # gRPC errors become NodeErrors as the channel closes: locate them outside it.
    with located(text, args.workflow):
        async with manager_at(peer) as manager:
            reply = await manager.SubmitWorkflow(
                manager_pb2.SubmitWorkflowRequest(
                    workflow_toml=text,
                    overrides=overrides,
                    files=[convert.file_ref_to_proto(ref) for ref in files],
                    inline_files=[convert.inline_file_to_proto(ref, data) for ref, data in inline],
                ),
                timeout=SUBMIT_TIMEOUT_SECONDS,
            )
            submitted = convert.submitted_from_proto(reply)
    async with manager_at(peer) as manager:
        return await _after_submit(manager, submitted, args, "submitted")


async def _send_inputs(
    peer: Dial, to_send: list[tuple[str, Path]]
) -> tuple[list[tuple[FileRef, bytes]], list[FileRef]]:
    """Small files go inside the submission (an upload costs a round trip each, which for
    a hundred tiny inputs is most of the submission's time); the rest are uploaded first,
    a few at a time on one channel."""
    inline: list[tuple[FileRef, bytes]] = []
    inline_bytes = 0
    to_upload: list[tuple[str, Path, int]] = []
    for name, path in to_send:
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= INLINE_FILE_BYTES and inline_bytes + size <= INLINE_TOTAL_BYTES:
            content = await asyncio.to_thread(path.read_bytes)
            ref = FileRef(name, hashlib.sha256(content).hexdigest(), len(content))
            inline.append((ref, content))
            inline_bytes += len(content)
        else:
            to_upload.append((name, path, size))
    uploaded: list[FileRef] = []
    if to_upload:
        gate = asyncio.Semaphore(PARALLEL_UPLOADS)
        async with connected(peer, "manager") as channel:

            async def send(name: str, path: Path) -> FileRef:
                async with gate:
                    sha256, size = await asyncio.to_thread(sha256_file, path)
                    await upload(channel, path, sha256, size, INPUT_PURPOSE)
                    return FileRef(name, sha256, size)

            uploaded = list(await asyncio.gather(*(send(n, p) for n, p, _ in to_upload)))
    return inline, uploaded


async def _after_submit(
    manager: manager_pb2_grpc.ManagerServiceAsyncStub,
    submitted: Submitted,
    args: argparse.Namespace,
    verb: str,
) -> int:
    """Prints the workflow id, then follows it with --wait."""
    workflow_id = submitted.workflow_id
    if args.json and not args.wait:
        views.print_json({"workflow_id": workflow_id, "tasks": submitted.task_count})
        return 0
    # Said at once, whatever follows: the id is what every other command takes.
    said = f"{verb} {workflow_id}: {submitted.task_count} tasks"
    print(said, file=sys.stderr if args.json else sys.stdout, flush=True)
    if not args.wait:
        return 0
    bar = ProgressBar(sys.stderr, submitted.estimated_seconds_per_task)
    try:
        state = await _follow(manager, workflow_id, bar)
    except asyncio.CancelledError:  # Ctrl-C: only this client stops
        sys.stderr.write(
            f"\n{workflow_id} goes on without you: 'vcnode watch {workflow_id}' follows it, "
            f"'vcnode cancel {workflow_id}' stops it\n"
        )
        raise
    status = await _workflow_status(manager, workflow_id)
    if args.json:
        views.print_json({"workflow_id": workflow_id, **_status_json(status)})
    else:
        _print_outcome(status)
    return 0 if state == "completed" else 1


def eta_seconds(
    counts: WorkflowCounts, elapsed: float, estimated_per_task: float
) -> tuple[float, bool] | None:
    """Seconds left and whether that is the splitter's estimate (before any task completed)
    rather than the measured rate; None when there is nothing to go on."""
    ended = counts.completed + counts.failed + counts.cancelled + counts.skipped
    remaining = counts.total - ended
    if remaining <= 0:
        return None
    if counts.completed and elapsed > 0:
        return remaining / (counts.completed / elapsed), False
    if estimated_per_task > 0:
        # Tasks run this many at a time; before any starts, those fetched are the best
        # guess (they include the ones held ahead of a slot, so it errs on the short side).
        waves = math.ceil(remaining / max(counts.running or counts.fetching, 1))
        return max(0.0, waves * estimated_per_task - elapsed), True
    return None


class ProgressBar:
    """One line, redrawn in place on a terminal (never wider than it); off a terminal (a
    log, a pipe), a line when the counts change, every PIPE_SECONDS at most, and the last."""

    WIDTH = 20
    MIN_WIDTH = 6
    PIPE_SECONDS = 5.0

    def __init__(self, stream: TextIO, estimated_seconds_per_task: float = 0.0) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._last = ""
        self._tty = stream.isatty()
        self._estimate = estimated_seconds_per_task
        self._printed_at = -math.inf
        self._pending = ""

    def show(self, counts: WorkflowCounts, note: str = "") -> None:
        elapsed = time.monotonic() - self._started
        rate = counts.completed / elapsed if elapsed > 0 else 0.0
        left = eta_seconds(counts, elapsed, self._estimate)
        if left is None:
            eta = "ETA --"
        else:
            eta = f"ETA ~{left[0]:.0f}s" if left[1] else f"ETA {left[0]:.0f}s"
        counted = (
            f"{counts.completed}/{counts.total} done, {counts.running} run, "
            + (f"{counts.fetching} fetch, " if counts.fetching else "")
            + f"{counts.failed} failed, "
            + (f"{counts.skipped} skipped, " if counts.skipped else "")
            + f"{counts.queued} wait"
        )
        tail = f" | {eta}" + (f" | {note}" if note else "")
        text = f"{counted} | {rate:.1f}/s{tail}"
        width = self.WIDTH
        if self._tty:
            # The bar gives way first, down to MIN_WIDTH, then the rate (the ETA says it
            # too), so that the counts and the ETA stay whole.
            columns = shutil.get_terminal_size().columns - 1
            if len(text) + 3 + self.MIN_WIDTH > columns:
                text = counted + tail
            width = max(self.MIN_WIDTH, min(self.WIDTH, columns - len(text) - 3))
        line = f"[{_bar(counts, width)}] {text}"
        # Off a terminal, a new line only when the counts change, not the rate.
        key = line if self._tty else line.split(" | ")[0] + note
        if key == self._last:
            return
        self._last = key
        if self._tty:
            columns = shutil.get_terminal_size().columns - 1
            self._stream.write("\r\033[K" + line[:columns])
            self._stream.flush()
            return
        self._pending = line
        now = time.monotonic()
        if now - self._printed_at >= self.PIPE_SECONDS:
            self._print_pending(now)

    def _print_pending(self, now: float) -> None:
        if self._pending:
            self._stream.write(self._pending + "\n")
            self._stream.flush()
            self._pending = ""
            self._printed_at = now

    def close(self) -> None:
        if self._tty and self._last:
            self._stream.write("\n")
            self._stream.flush()
        elif not self._tty:
            self._print_pending(time.monotonic())


def _bar(counts: WorkflowCounts, width: int) -> str:
    """Completed tasks fill it with #, failed and cancelled ones with x (ended, not done),
    running ones with >, those a volunteer fetches (or holds for a slot) with -."""
    total = max(counts.total, 1)
    bar = "#" * round(width * counts.completed / total)
    bar += "x" * round(width * (counts.failed + counts.skipped + counts.cancelled) / total)
    bar += ">" * round(width * counts.running / total)
    bar += "-" * round(width * counts.fetching / total)
    return bar[:width] + "." * (width - len(bar))


async def _follow(
    manager: manager_pb2_grpc.ManagerServiceAsyncStub, workflow_id: str, bar: ProgressBar
) -> str:
    """Shows progress until the workflow ends; returns its final state. A manager that goes
    away (a restart) is waited for, up to RECONNECT_SECONDS: the workflow goes on there."""
    backoff = Backoff()
    away_since: float | None = None
    try:
        while True:
            try:
                state = await _watch(manager, workflow_id, bar)
                if not state:  # the stream ended first: over, or the manager stopping
                    state = (await _workflow_status(manager, workflow_id)).state
                if state in FINAL_STATES:
                    return state
                away_since = None  # it answered: watch again, after a short pause
                backoff.reset()
                await asyncio.sleep(backoff.next_delay())
                continue
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            now = time.monotonic()
            if away_since is None:
                away_since = now
                bar.close()
                sys.stderr.write("the manager went away; waiting for it (the workflow goes on)\n")
            elif now - away_since > RECONNECT_SECONDS:
                raise UnreachableError(
                    f"the manager did not come back within {RECONNECT_SECONDS:g} s; "
                    f"{workflow_id} goes on there: 'vcnode status {workflow_id}' once it is back"
                )
            await asyncio.sleep(backoff.next_delay())
    finally:
        bar.close()


async def _watch(
    manager: manager_pb2_grpc.ManagerServiceAsyncStub, workflow_id: str, bar: ProgressBar
) -> str:
    """Shows each update until the stream ends; the final state if it said one, else ""."""
    async for event in manager.WatchWorkflow(
        manager_pb2.WatchWorkflowRequest(workflow_id=workflow_id)
    ):
        update = convert.workflow_update_from_proto(event)
        bar.show(update.counts, "merging" if update.kind == "merging" else "")
        if update.kind in FINAL_STATES and not update.task_id:
            return update.kind
    return ""


def _status_json(status: WorkflowStatus) -> dict[str, Any]:
    return {
        "workflow_id": status.workflow_id,
        "name": status.name,
        "type": status.type,
        "state": status.state,
        "owner": status.owner,
        "error": status.error,
        "counts": {
            "queued": status.counts.queued,
            "running": status.counts.running,
            "fetching": status.counts.fetching,
            "completed": status.counts.completed,
            "failed": status.counts.failed,
            "skipped": status.counts.skipped,
            "cancelled": status.counts.cancelled,
            "total": status.counts.total,
        },
        "tasks": [
            {
                "task_id": task.task_id,
                "name": task.name,
                "state": task.state,
                "attempts": task.attempts,
                "error": task.error,
                "volunteer_id": task.volunteer_id,
                "copies": task.copies,
                "agreeing": task.agreeing,
                "validation": task.validation,
                **(
                    {"copy_details": [asdict(copy) for copy in task.copy_details]}
                    if task.copy_details
                    else {}
                ),
            }
            for task in status.tasks
        ],
        "validation_cost": {
            "extra_copies": status.extra_copies,
            "extra_run_seconds": status.extra_run_seconds,
            "run_seconds": status.run_seconds,
        },
        "created_at": status.created_at,
        "updated_at": status.updated_at,
    }


# Tasks a status lists at most unless asked for all: those needing attention come first.
TASK_ROWS = 40
_INTEREST = {"failed": 0, "running": 1, "fetching": 2, "skipped": 3, "cancelled": 4}


def task_rows(status: WorkflowStatus, everything: bool) -> tuple[list[list[str]], Counter[str]]:
    """The rows to show (in order of interest, then as listed) and the states left out.
    A finished workflow shows only what did not complete."""
    ended = status.state in FINAL_STATES
    tasks = [t for t in status.tasks if not (ended and t.state == "completed")]
    if not everything and len(tasks) > TASK_ROWS:
        tasks = sorted(tasks, key=lambda t: _INTEREST.get(t.state, len(_INTEREST)))
    shown, left_out = (tasks, []) if everything else (tasks[:TASK_ROWS], tasks[TASK_ROWS:])
    rows = [
        [t.name, t.state, _copies(t), str(t.attempts), t.volunteer_id[:8], t.error] for t in shown
    ]
    return rows, Counter(t.state for t in left_out)


def _copies(task: TaskStatusRow) -> str:
    """How many copies ran and agreed: "1" for a task run once."""
    if task.copies <= 1:
        return str(task.copies or 1)
    return f"{task.copies} ({task.agreeing} agreed)"


def validation_cost(status: WorkflowStatus) -> str:
    """What checking results cost this workflow, in copies and run time."""
    if not status.extra_copies:
        return "no extra copies ran"
    share = status.extra_run_seconds / status.run_seconds if status.run_seconds else 0.0
    return (
        f"{status.extra_copies} extra copies ran to check results: "
        f"{status.extra_run_seconds:.1f} s of {status.run_seconds:.1f} s of run time "
        f"({share:.0%})"
    )


def _print_copies(status: WorkflowStatus) -> None:
    """One task and every copy that ran of it."""
    (task,) = status.tasks
    print(f"task      {task.name} ({task.task_id}) in {status.workflow_id}")
    print(f"state     {task.state}" + (f": {task.error}" if task.error else ""))
    if not task.copy_details:
        print(
            f"copies    1 (its results are not checked by replication); ran on "
            f"{task.volunteer_id[:8] or 'no volunteer yet'}"
        )
        return
    print(f"copies    {task.copies}, {task.agreeing} agreed: {task.validation or 'undecided'}")
    rows = [
        [
            str(copy.number),
            copy.state,
            copy.volunteer_id[:8],
            copy.verdict or "-",
            f"{copy.run_seconds:.1f}s",
            " ".join(f"{ref.name}={ref.sha256[:12]}" for ref in copy.outputs) or copy.error,
        ]
        for copy in task.copy_details
    ]
    print()
    print(views.table(["COPY", "STATE", "VOLUNTEER", "VERDICT", "RAN", "OUTPUTS (sha256)"], rows))


def _print_outcome(status: WorkflowStatus, everything: bool = False) -> None:
    print(f"workflow  {status.workflow_id} ({status.type})")
    if status.owner:
        print(f"owner     {status.owner}")
    print(f"state     {status.state}" + (f": {status.error}" if status.error else ""))
    counts = status.counts
    print(
        f"tasks     {counts.completed} completed, {counts.running} running, "
        f"{counts.fetching} fetching, {counts.failed} failed, {counts.skipped} skipped, "
        f"{counts.queued} queued, {counts.cancelled} cancelled of {counts.total}"
    )
    if status.extra_copies:
        print(f"checks    {validation_cost(status)}")
    rows, left_out = task_rows(status, everything)
    if rows:
        print()
        print(views.table(["TASK", "STATE", "COPIES", "ATTEMPTS", "VOLUNTEER", "REASON"], rows))
    if left_out:
        states = ", ".join(f"{count} {state}" for state, count in sorted(left_out.items()))
        print(
            f"... and {left_out.total()} more ({states}): "
            f"node status {status.workflow_id} --all lists every task"
        )
    failed = [t for t in status.tasks if t.state == "failed" and t.error]
    if failed:
        print(
            f"\nwhat a task wrote: vcnode logs {status.workflow_id} {failed[0].name} --stderr "
            "(or without --stderr, its stdout)"
        )
    if status.state in ("failed", "cancelled"):
        print(f"\nto run again what did not complete: vcnode submit --resume {status.workflow_id}")


async def status(peer: Dial, args: argparse.Namespace) -> int:
    if args.why is not None:
        return await _why(peer, args)
    async with manager_at(peer) as manager:
        found = await _workflow_status(manager, args.workflow, args.task or "")
    if args.json:
        views.print_json(_status_json(found))
    elif args.task:
        _print_copies(found)
    else:
        _print_outcome(found, everything=args.all)
    return 0


async def _why(peer: Dial, args: argparse.Namespace) -> int:
    async with manager_at(peer) as manager:
        reply = await manager.ExplainTasks(
            manager_pb2.ExplainTasksRequest(workflow_id=args.workflow, task=args.why),
            timeout=CALL_TIMEOUT_SECONDS,
        )
    explained = [convert.explanation_from_proto(t) for t in reply.tasks]
    if args.json:
        views.print_json(
            {
                "tasks": [asdict(explanation) for explanation in explained],
                "pool_unknown": reply.pool_unknown,
            }
        )
        return 0
    if reply.pool_unknown:
        print(f"the pool is not known: {reply.pool_unknown}")
    if not explained:
        print(f"workflow {args.workflow}: no task waits")
    for explanation in explained[:TASK_ROWS]:
        print(views.explanation_text(explanation))
    if len(explained) > TASK_ROWS:
        print(
            f"... and {len(explained) - TASK_ROWS} more waiting tasks: "
            f"vcnode status {args.workflow} --why TASK explains one"
        )
    return 0


async def watch(peer: Dial, args: argparse.Namespace) -> int:
    async with manager_at(peer) as manager:
        since = time.time() - args.since if args.since else 0.0
        async for event in manager.WatchWorkflow(
            manager_pb2.WatchWorkflowRequest(workflow_id=args.workflow, since=since)
        ):
            update = convert.workflow_update_from_proto(event)
            if args.json:
                sys.stdout.write(
                    json.dumps(
                        {
                            "workflow_id": update.workflow_id,
                            "task_id": update.task_id,
                            "kind": update.kind,
                            "message": update.message,
                            "at": update.at,
                            "counts": asdict(update.counts),
                        }
                    )
                    + "\n"
                )
            else:
                subject = update.task_id or update.workflow_id
                at = time.strftime("%H:%M:%S", time.localtime(update.at))
                print(
                    f"{at} {subject} {update.kind}"
                    + (f": {update.message}" if update.message else "")
                )
            sys.stdout.flush()
        final = await _workflow_status(manager, args.workflow)
    return 0 if final.state == "completed" else 1


async def results(peer: Dial, args: argparse.Namespace) -> int:
    async with manager_at(peer) as manager:
        reply = await manager.GetResults(
            manager_pb2.GetResultsRequest(workflow_id=args.workflow),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        refs = [convert.file_ref_from_proto(ref) for ref in reply.files]
        if not refs:
            status = await _workflow_status(manager, args.workflow)
            raise NodeError(
                f"workflow {args.workflow} has no results yet (it is {status.state}); "
                f"see 'node status {args.workflow}'"
            )
    out: Path = args.output
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".vcnode-download-") as scratch:
        from daemon.transfer.blobstore import BlobStore  # only `results` keeps blobs

        store = BlobStore(Path(scratch), max_blob_bytes=2**62, quota_bytes=2**62)
        await store.open()
        written: list[dict[str, Any]] = []
        for ref in refs:
            target = out / result_path(ref.name)
            path = await download(peer, ref.sha256, ref.size, store)
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(shutil.move, path, target)
            written.append(
                {"name": ref.name, "path": str(target), "sha256": ref.sha256, "size": ref.size}
            )
        await store.close()
    if args.json:
        views.print_json(written)
    else:
        for item in written:
            print(f"{item['path']}  ({item['size']} bytes, sha256 {item['sha256'][:12]})")
    return 0


async def logs(peer: Dial, args: argparse.Namespace) -> int:
    stream = "stderr" if args.stderr else "stdout"
    if args.follow:
        if args.attempt is not None:
            raise InvalidInputError(
                "--follow follows the attempt that runs and --attempt N shows one that ended: "
                "give one of them"
            )
        if args.json:
            raise InvalidInputError("--json does not go with --follow: the log is printed raw")
        return await _follow_log(peer, args.workflow, args.task, stream)
    if args.attempt is not None and args.attempt < 1:
        raise InvalidInputError(f"--attempt counts from 1, not {args.attempt}")
    async with manager_at(peer) as manager:
        reply = await manager.GetTaskLog(
            manager_pb2.GetTaskLogRequest(
                workflow_id=args.workflow, task=args.task, stream=stream, attempt=args.attempt or 0
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
    if args.json:
        views.print_json(
            {
                "task_id": reply.task_id,
                "name": reply.name,
                "state": reply.state,
                "stream": stream,
                "content": reply.content.decode("utf-8", "replace"),
                "note": reply.note,
                "attempt": reply.attempt,
                "attempts": list(reply.attempts),
            }
        )
        return 0
    sys.stdout.buffer.write(reply.content)
    sys.stdout.flush()
    if len(reply.attempts) > 1:
        kept = ", ".join(map(str, reply.attempts))
        print(
            f"({reply.name}: attempt {reply.attempt}; --attempt N shows another of {kept})",
            file=sys.stderr,
        )
    if reply.note:
        print(f"({reply.name}: {reply.note})", file=sys.stderr)
    return 0


async def _follow_log(peer: Dial, workflow_id: str, task: str, stream: str) -> int:
    """Prints the log as it comes (notes to stderr); the exit says how the task ended."""
    end: manager_pb2.TaskLogEnd | None = None
    attempts = 0
    async with manager_at(peer) as manager:
        request = manager_pb2.FollowTaskLogRequest(
            workflow_id=workflow_id, task=task, stream=stream
        )
        async for piece in manager.FollowTaskLog(request):
            kind = piece.WhichOneof("kind")
            if kind == "data":
                sys.stdout.buffer.write(piece.data)
                sys.stdout.flush()
            elif kind == "attempt":
                attempts += 1
                if attempts > 1:  # the first needs no saying
                    on = piece.attempt.volunteer_id[:12]
                    print(
                        f"(attempt {piece.attempt.attempt}" + (f" on {on})" if on else ")"),
                        file=sys.stderr,
                    )
            elif kind == "skipped":
                print(f"({piece.skipped} bytes not shown: written too fast)", file=sys.stderr)
            elif kind == "note":
                print(f"({piece.note})", file=sys.stderr)
            elif kind == "end":
                end = piece.end
    if end is None:
        raise NodeError(
            f"the manager stopped before the task ended: `vcnode logs {workflow_id} "
            f"{task} -f` follows it again"
        )
    said = f": {end.error}" if end.error and end.state != "completed" else ""
    print(f"({end.name} {end.state}{said})", file=sys.stderr)
    return 0 if end.state == "completed" else 1


def result_path(name: str) -> Path:
    """Where a result goes under the output folder: `file`, or `task/file` for a task's
    own output. A manager's name never leaves the folder: every part must be a plain name."""
    parts = name.split("/")
    if len(parts) > 2 or any(file_name_problem(part) is not None for part in parts):
        raise NodeError(f"the manager named a result {name[:80]!r}, which is not a file name")
    return Path(*parts)


async def cancel(peer: Dial, args: argparse.Namespace) -> int:
    async with manager_at(peer) as manager:
        reply = await manager.CancelWorkflow(
            manager_pb2.CancelWorkflowRequest(workflow_id=args.workflow),
            timeout=CALL_TIMEOUT_SECONDS,
        )
    cancelled = reply.cancelled_tasks
    if args.json:
        views.print_json({"workflow_id": args.workflow, "cancelled_tasks": cancelled})
    else:
        print(f"cancelled {args.workflow} ({cancelled} tasks were queued or running)")
    return 0


async def delete(peer: Dial, args: argparse.Namespace) -> int:
    async with manager_at(peer) as manager:
        reply = await manager.DeleteWorkflow(
            manager_pb2.DeleteWorkflowRequest(workflow_id=args.workflow),
            timeout=DELETE_TIMEOUT_SECONDS,
        )
    deleted_blobs, freed_bytes = reply.deleted_blobs, reply.freed_bytes
    if args.json:
        views.print_json(
            {
                "workflow_id": args.workflow,
                "deleted_blobs": deleted_blobs,
                "freed_bytes": freed_bytes,
            }
        )
    else:
        print(
            f"deleted {args.workflow}: {deleted_blobs} files no other workflow uses, "
            f"{views.size(freed_bytes)} freed"
        )
    return 0


async def list_workflows(peer: Dial, args: argparse.Namespace) -> int:
    async with manager_at(peer) as manager:
        reply = await manager.ListWorkflows(
            manager_pb2.ListWorkflowsRequest(), timeout=CALL_TIMEOUT_SECONDS
        )
    workflows = [convert.workflow_status_from_proto(w) for w in reply.workflows]
    if args.json:
        # Counts only: a workflow's tasks are `vcnode status WF --json`.
        listed = [{k: v for k, v in _status_json(w).items() if k != "tasks"} for w in workflows]
        views.print_json(listed)
        return 0
    if not workflows:
        print("no workflows on this manager yet")
        return 0
    rows = [
        [
            w.workflow_id,
            w.owner or "-",
            w.type,
            w.state,
            f"{w.counts.completed}/{w.counts.total}",
            views.ago(w.created_at),
        ]
        for w in workflows
    ]
    print(views.table(["WORKFLOW", "OWNER", "TYPE", "STATE", "DONE", "SUBMITTED"], rows))
    return 0
