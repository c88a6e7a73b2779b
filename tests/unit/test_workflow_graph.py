"""A task graph's problems, found before anything runs."""

from __future__ import annotations

from manager_node.workflow import WorkflowTask
from workflows.graph import UpstreamInput, find_cycle, graph_problems


def graph(*tasks: WorkflowTask) -> list[tuple[str, str]]:
    return graph_problems(list(tasks), {"a": ("out",), "b": ("out",), "c": ()})


def test_a_sound_graph_has_no_problems() -> None:
    assert (
        graph(
            WorkflowTask("a", "a"),
            WorkflowTask("b", "b", ("a",), (UpstreamInput("x", "a", "out"),)),
        )
        == []
    )


def test_every_graph_problem_is_reported_with_its_task() -> None:
    problems = graph(
        WorkflowTask("a", "a"),
        WorkflowTask("a", "a", ("c",)),
        WorkflowTask("b", "b", ("ghost",), (UpstreamInput("x", "a", "out"),)),
        WorkflowTask("c", "c", ("a",), (UpstreamInput("y", "a", "missing"),)),
    )
    assert ("a", "two tasks are named 'a'") in problems
    assert ("b", "no task is named 'ghost'") in problems
    assert ("b", "b reads from a but does not depend on it") in problems
    assert ("c", "c reads missing from a, which declares no such output") in problems
    assert ("", "dependency cycle: a -> c -> a") in problems


def test_find_cycle_returns_the_path_or_nothing() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) == []


def test_find_cycle_follows_a_chain_of_thousands_of_tasks() -> None:
    chain = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(20_000)}
    assert find_cycle(dict(reversed(list(chain.items())))) == []
    chain["t0"] = ["t19999"]
    cycle = find_cycle(chain)
    assert cycle[0] == cycle[-1]
    assert len(cycle) == 20_001
