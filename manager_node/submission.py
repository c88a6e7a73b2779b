"""Turning a workflow file into tasks: the splitter's split (or the file's own `[[tasks]]`),
inputs stored as blobs, images pinned, and every check a task must pass before anything
runs (its graph, its size at the coordinator's edge, whether the pool can hold it)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daemon.errors import InvalidInputError
from daemon.models import FileRef, TaskSpec, Volunteer
from daemon.task_files import file_name_problem
from daemon.transfer.blobstore import BlobStore
from daemon.transport import convert
from daemon.transport.caps import excess
from manager_node.admission import ProposedTask, inputs_mb, unschedulable
from manager_node.images import ImageArchives
from manager_node.store import NewTask
from splitters.api import (
    Directory,
    Splitter,
    SplitterError,
    TaskOutput,
    TaskTemplate,
    run_step,
    validate_parameters,
)
from splitters.registry import get_splitter
from workflows.file import EXPLICIT_TYPE, ExplicitTask, WorkflowFile
from workflows.graph import UpstreamInput, graph_problems
from workflows.validation_policy import Mode, ValidationPolicy


@dataclass(frozen=True)
class Prepared:
    """A workflow ready to be recorded: its id, tasks, inputs and the split's parameters."""

    workflow_id: str
    tasks: list[NewTask]
    inputs: list[FileRef]
    parameters: dict[str, Any]
    estimated_seconds_per_task: float


class TaskBuilder:
    def __init__(
        self,
        blobs: BlobStore,
        workdir: Path,
        images: ImageArchives,
        volunteers: Callable[[], Awaitable[list[Volunteer] | None]],
        address: Callable[[], str],
    ) -> None:
        self._blobs = blobs
        self._workdir = workdir
        self._images = images
        self._volunteers = volunteers
        self._address = address

    async def prepare(
        self,
        workflow: WorkflowFile,
        files: Sequence[FileRef],
        inline: Sequence[tuple[FileRef, bytes]],
    ) -> Prepared:
        """The workflow's tasks, checked; its workdir is removed if anything fails."""
        # Concurrently: the store syncs the blobs published together in one round.
        stored = await asyncio.gather(*(self._store_inline(ref, data) for ref, data in inline))
        files = [*files, *stored]
        workflow_id = new_workflow_id(workflow.name)
        workdir = self._workdir / workflow_id
        params: dict[str, Any] = {}
        estimated_seconds = 0.0
        try:
            if workflow.type == EXPLICIT_TYPE:
                tasks = await self._explicit_tasks(workflow_id, workflow.tasks, files)
                tasks = [
                    replace(new, validation=entry.validation or workflow.validation)
                    for new, entry in zip(tasks, workflow.tasks, strict=True)
                ]
            else:
                splitter = get_splitter(workflow.type)
                raw = await self._materialize_files(
                    splitter, dict(workflow.parameters), files, workdir
                )
                params = validate_parameters(splitter.parameters, raw, workdir / "inputs")
                estimate = run_step(splitter, "estimate", lambda: splitter.estimate(params))
                estimated_seconds = estimate.seconds_per_task
                templates = await asyncio.to_thread(_split, splitter, params, workdir / "split")
                if not templates:
                    raise SplitterError("parameters", "the split produced no tasks")
                tasks = await self._tasks(workflow_id, templates)
                tasks = [replace(new, validation=workflow.validation) for new in tasks]
            _check_graph(workflow.type, tasks)
            # On a thread: ~15 us a task, 1.5 s for 100,000, the event loop's to keep.
            await asyncio.to_thread(_check_sendable, workflow.type, tasks)
            tasks = [_with_room_for_inputs(new) for new in tasks]
            # Pinned first: an image the manager ships can reach any volunteer.
            tasks = await self._attach_images(tasks)
            await self._check_schedulable(workflow, tasks)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            raise
        inputs = sorted({ref for new in tasks for ref in new.spec.inputs}, key=lambda r: r.name)
        return Prepared(workflow_id, tasks, inputs, params, estimated_seconds)

    async def _store_inline(self, ref: FileRef, content: bytes) -> FileRef:
        """An input sent inside the submission, stored like an uploaded one once it proves
        to be the file the client named."""
        sha256, size = await self._blobs.put_bytes(content)
        if (sha256, size) != (ref.sha256, ref.size):
            raise InvalidInputError(
                f"input {ref.name}: its content does not match the sha256 and size sent with it"
            )
        return ref

    async def _check_schedulable(self, workflow: WorkflowFile, tasks: list[NewTask]) -> None:
        """Refuses a workflow with a task no online volunteer can hold, naming the key."""
        volunteers = await self._volunteers()
        if not volunteers:
            return
        if workflow.type == EXPLICIT_TYPE:
            index = {entry.name: i for i, entry in enumerate(workflow.tasks)}
            proposed = [
                ProposedTask(
                    t.name,
                    t.spec,
                    f"tasks[{index[t.name]}].resources.",
                    distinct=_agreeing_copies(t.validation),
                    distinct_key=(
                        f"tasks[{index[t.name]}].quorum"
                        if workflow.tasks[index[t.name]].validation
                        else "workflow.quorum"
                    ),
                )
                for t in tasks
            ]
        else:
            names = frozenset(p.name for p in get_splitter(workflow.type).parameters)
            proposed = [
                ProposedTask(t.name, t.spec, "", names, _agreeing_copies(t.validation))
                for t in tasks
            ]
        problems = unschedulable(proposed, volunteers)
        if problems:
            raise SplitterError.combine(problems)

    async def _materialize_files(
        self,
        splitter: Splitter,
        raw: dict[str, object],
        files: Sequence[FileRef],
        workdir: Path,
    ) -> dict[str, object]:
        """File and folder parameters arrive as blobs the client uploaded (a folder's files
        as `name/file`); the splitter wants paths."""
        uploaded = {ref.name: ref for ref in files}
        for parameter in splitter.parameters:
            if parameter.type not in (Path, Directory) or raw.get(parameter.name) is None:
                continue
            if parameter.type is Directory:
                folder = workdir / "inputs" / parameter.name
                await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
                prefix = f"{parameter.name}/"
                for name, ref in uploaded.items():
                    if name.startswith(prefix):
                        target = folder / _plain_name(name[len(prefix) :], parameter.name)
                        await self._link_blob(ref, target, parameter.name)
                raw[parameter.name] = str(folder)
                continue
            file = uploaded.get(parameter.name)
            if file is None:
                raise SplitterError(
                    parameter.name, f"file {raw[parameter.name]} was not uploaded with the workflow"
                )
            target = workdir / "inputs" / f"{parameter.name}{Path(str(raw[parameter.name])).suffix}"
            await self._link_blob(file, target, parameter.name)
            raw[parameter.name] = str(target)
        return raw

    async def _link_blob(self, ref: FileRef, target: Path, key: str) -> None:
        if not await self._blobs.has(ref.sha256):
            raise SplitterError(key, f"file {ref.name} was not uploaded with the workflow")
        await asyncio.to_thread(_link_or_copy, await self._blobs.path(ref.sha256), target)

    async def _explicit_tasks(
        self, workflow_id: str, entries: Sequence[ExplicitTask], files: Sequence[FileRef]
    ) -> list[NewTask]:
        """`[[tasks]]` workflows: the client uploaded every input, named as written."""
        uploaded = {ref.name: ref for ref in files}
        tasks = []
        for index, entry in enumerate(entries):
            inputs = []
            for name, source in sorted(entry.inputs.items()):
                if isinstance(source, TaskOutput):
                    continue
                ref = uploaded.get(source)
                if ref is None or not await self._blobs.has(ref.sha256):
                    raise SplitterError(
                        f"tasks[{index}].inputs",
                        f"file {source} was not uploaded with the workflow",
                    )
                inputs.append(FileRef(name, ref.sha256, ref.size))
            tasks.append(self._new_task(workflow_id, entry, tuple(inputs)))
        return tasks

    async def _tasks(self, workflow_id: str, templates: Sequence[TaskTemplate]) -> list[NewTask]:
        """The split's tasks with their inputs stored as blobs. Each distinct file is copied in
        once (splitters hand many tasks the same script), all of them together, on threads;
        the first failure stops the others and is raised as itself."""
        sources = list(
            dict.fromkeys(
                source
                for template in templates
                for source in template.inputs.values()
                if not isinstance(source, TaskOutput)
            )
        )
        try:
            async with asyncio.TaskGroup() as group:
                copies = [group.create_task(self._blobs.put_file(path)) for path in sources]
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        blobs = {path: copy.result() for path, copy in zip(sources, copies, strict=True)}
        return [
            self._new_task(
                workflow_id,
                template,
                tuple(
                    FileRef(name, *blobs[source])
                    for name, source in sorted(template.inputs.items())
                    if not isinstance(source, TaskOutput)
                ),
            )
            for template in templates
        ]

    def _new_task(
        self,
        workflow_id: str,
        entry: TaskTemplate | ExplicitTask,
        inputs: tuple[FileRef, ...],
    ) -> NewTask:
        spec = TaskSpec(
            task_id=f"{workflow_id}.{entry.name}",
            workflow_id=workflow_id,
            image=entry.image,
            command=entry.command,
            resources=entry.resources,
            timeout_seconds=entry.timeout_seconds,
            inputs=inputs,
            outputs=entry.outputs,
            network=isinstance(entry, ExplicitTask) and entry.network,
            manager_address=self._address(),
            retries=entry.retries,
        )
        upstream = tuple(
            UpstreamInput(name, source.task, source.output)
            for name, source in sorted(entry.inputs.items())
            if isinstance(source, TaskOutput)
        )
        return NewTask(spec, entry.name, entry.depends_on, upstream)

    async def _attach_images(self, tasks: list[NewTask]) -> list[NewTask]:
        """Pins each task to the ID of the image this host holds, which the manager can then
        export for volunteers that lack it."""
        ids = {image: await self._images.image_id(image) for image in {t.spec.image for t in tasks}}
        return [
            replace(new, spec=replace(new.spec, image_id=image_id, image_from_manager=True))
            if (image_id := ids[new.spec.image])
            else new
            for new in tasks
        ]


def _agreeing_copies(policy: ValidationPolicy) -> int:
    """Distinct volunteers a task needs before it can be decided at all: adaptive lets a
    lone answer stand when no second volunteer can check it; quorum does not."""
    return policy.quorum if policy.mode is Mode.QUORUM else 1


def _with_room_for_inputs(new: NewTask) -> NewTask:
    """The task asks for at least the disk its inputs take (they land in the volunteer's
    cache): it is then offered only where they fit, and refused at submit if nowhere."""
    needed = inputs_mb(new.spec)
    resources = new.spec.resources
    if needed <= resources.disk_mb:
        return new
    return replace(new, spec=replace(new.spec, resources=replace(resources, disk_mb=needed)))


def _check_graph(workflow_type: str, tasks: list[NewTask]) -> None:
    """Splitters are code too: their DAG is checked like a user's before anything runs."""
    problems = graph_problems(tasks, {t.name: t.spec.outputs for t in tasks})
    if problems:
        key = "tasks" if workflow_type == EXPLICIT_TYPE else f"{workflow_type} split"
        raise SplitterError.combine([SplitterError(key, problem) for _, problem in problems])


def _check_sendable(workflow_type: str, tasks: list[NewTask]) -> None:
    """Every task must pass the coordinator's edge caps: one that cannot would hold up every
    task handed over after it. Refused here, naming the task."""
    problems = []
    for new in tasks:
        if (problem := excess(convert.task_spec_to_proto(new.spec))) is not None:
            where = (
                f"task {new.name}" if workflow_type == EXPLICIT_TYPE else f"{workflow_type} split"
            )
            problems.append(
                SplitterError(where, f"too large to hand to the coordinator: {problem}")
            )
    if problems:
        raise SplitterError.combine(problems)


def _split(splitter: Splitter, params: dict[str, Any], workdir: Path) -> list[TaskTemplate]:
    workdir.mkdir(parents=True, exist_ok=True)
    return run_step(splitter, "split", lambda: splitter.split(params, workdir))


def new_workflow_id(name: str) -> str:
    """Readable and unique; safe as a directory name whatever the client called it."""
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in name[:24]).strip("-")
    return f"{stem or 'workflow'}-{uuid.uuid4().hex[:8]}"


def _plain_name(name: str, key: str) -> str:
    """A client names a folder's files; nothing it sends may leave the workdir."""
    if (problem := file_name_problem(name)) is not None:
        raise SplitterError(key, f"{name!r} {problem}")
    return name


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
