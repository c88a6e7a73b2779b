"""The submit --wait progress line: within the terminal's width, and sparing off one."""

from __future__ import annotations

import io
import os

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
