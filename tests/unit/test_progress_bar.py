"""The submit --wait progress line: within the terminal's width, and sparing off one."""

from __future__ import annotations

import io
import os
import re

import pytest

from cli.workflows import ProgressBar
from daemon.models import WorkflowCounts


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_line_fits_and_failed_tasks_do_not_look_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.get_terminal_size", lambda: os.terminal_size((80, 24)))
    stream = Terminal()
    bar = ProgressBar(stream)
    bar._started -= 100  # a hundred seconds in
    bar.show(WorkflowCounts(queued=9000, running=400, completed=500, failed=100, total=10_000))
    line = stream.getvalue().removeprefix("\r\033[K")
    assert len(line) <= 79
    assert "] 500/10000 done, 400 run, 100 failed, 9000 wait | 5.0/s | ETA " in line


def test_off_a_terminal_a_line_every_few_seconds_at_most_and_the_last() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar._started -= 100
    for done in range(200):
        bar.show(WorkflowCounts(queued=200 - done, completed=done, total=200))
    assert len(stream.getvalue().splitlines()) == 1  # the first; the others within 5 s
    bar.show(WorkflowCounts(completed=200, total=200))
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[-1].startswith("[####################] 200/200 done")
    assert len(lines[-1]) <= 80


def test_failed_tasks_fill_the_bar_with_their_own_mark() -> None:
    stream = io.StringIO()
    ProgressBar(stream).show(WorkflowCounts(completed=10, failed=10, total=20))
    assert stream.getvalue().startswith("[##########xxxxxxxxxx] 10/20 done")


def test_skipped_tasks_are_said_apart_from_failed_ones() -> None:
    stream = io.StringIO()
    ProgressBar(stream).show(WorkflowCounts(completed=2, failed=1, skipped=3, total=6))
    assert "] 2/6 done, 0 run, 1 failed, 3 skipped, 0 wait |" in stream.getvalue()


def test_tasks_fetching_have_their_own_mark_and_count_apart_from_running_ones() -> None:
    stream = io.StringIO()
    counts = WorkflowCounts(queued=2, running=2, fetching=2, completed=2, failed=2, total=10)
    ProgressBar(stream).show(counts)
    line = stream.getvalue()
    assert line.startswith("[####xxxx>>>>----....] 2/10 done, 2 run, 2 fetch, 2 failed, 2 wait |")


def test_no_fetch_count_is_said_while_nothing_is_fetched() -> None:
    stream = io.StringIO()
    ProgressBar(stream).show(WorkflowCounts(queued=1, running=1, total=2))
    assert "] 0/2 done, 1 run, 0 failed, 1 wait |" in stream.getvalue()
    assert "fetch" not in stream.getvalue()


def test_on_an_80_column_terminal_the_rate_gives_way_so_counts_and_eta_stay_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.get_terminal_size", lambda: os.terminal_size((80, 24)))
    stream = Terminal()
    bar = ProgressBar(stream, estimated_seconds_per_task=10)
    bar._started -= 100
    counts = WorkflowCounts(
        queued=8500, running=400, fetching=400, completed=600, failed=100, total=10_000
    )
    bar.show(counts)
    line = stream.getvalue().removeprefix("\r\033[K")
    assert len(line) <= 79
    assert re.fullmatch(
        r"\[[#x>\-.]{6,}\] 600/10000 done, 400 run, 400 fetch, 100 failed, 8500 wait \| ETA \d+s",
        line,
    ), line
