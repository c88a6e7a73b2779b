"""A workflow's task graph as written, before anything runs: what a task reads from the tasks
it depends on, what a failure does downstream, and why a set of tasks cannot form a graph.

The CLI checks a file with it and the manager checks every split with it, so both say the
same thing about the same graph.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class UpstreamInput:
    """An input that is the output of a task this one depends on: known by name at submit,
    by content only once that task completed."""

    name: str  # under /input
    task: str  # the producing task's name
    output: str  # one of its declared outputs


class OnFailure(StrEnum):
    """What a task that fails for good does to the tasks downstream of it (`[workflow]
    on_failure`); independent branches go on either way."""

    SKIP = "skip"  # they are skipped: `--resume` runs them once their inputs exist
    FAIL = "fail"  # they fail too, naming the task that did not complete


class GraphTask(Protocol):
    """What the graph checks read of a task."""

    @property
    def name(self) -> str: ...

    @property
    def depends_on(self) -> tuple[str, ...]: ...

    @property
    def upstream(self) -> tuple[UpstreamInput, ...]: ...


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """A dependency cycle as a path of names (first = last), or [] when there is none.

    Depth-first without recursion: a chain of thousands of tasks is an ordinary workflow."""
    done: set[str] = set()
    for start in depends_on:
        if start in done:
            continue
        path = [start]
        on_path = {start}
        # Per name on the path, the dependencies not looked at yet.
        pending = [iter(depends_on.get(start, ()))]
        while pending:
            dependency = next(pending[-1], None)
            if dependency is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                pending.pop()
            elif dependency in on_path:
                return [*path[path.index(dependency) :], dependency]
            elif dependency not in done:
                path.append(dependency)
                on_path.add(dependency)
                pending.append(iter(depends_on.get(dependency, ())))
    return []


def graph_problems(
    tasks: Sequence[GraphTask], outputs: Mapping[str, Sequence[str]]
) -> list[tuple[str, str]]:
    """Why these tasks cannot form a workflow, as (task name or "", problem): duplicate
    names, unknown dependencies, a cycle, or an input read from an output its producer does
    not declare. `outputs` holds each task's declared outputs by task name."""
    problems = []
    names = [task.name for task in tasks]
    for name in sorted(name for name, count in Counter(names).items() if count > 1):
        problems.append((name, f"two tasks are named {name!r}"))
    known = set(names)
    for task in tasks:
        for dependency in task.depends_on:
            if dependency not in known:
                problems.append((task.name, f"no task is named {dependency!r}"))
        for wanted in task.upstream:
            if wanted.task not in task.depends_on:
                problems.append(
                    (task.name, f"{task.name} reads from {wanted.task} but does not depend on it")
                )
            elif wanted.task in known and wanted.output not in outputs.get(wanted.task, ()):
                problems.append(
                    (
                        task.name,
                        f"{task.name} reads {wanted.output} from {wanted.task},"
                        f" which declares no such output",
                    )
                )
    cycle = find_cycle({task.name: [d for d in task.depends_on if d in known] for task in tasks})
    if cycle:
        problems.append(("", "dependency cycle: " + " -> ".join(cycle)))
    return problems
