"""What a volunteer says about a task that failed by itself."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.runtime.spec import LogBuffer, failure_for_exit, read_progress, telling_line
from daemon.task_files import PROGRESS_FILE


def test_a_failure_says_the_last_line_the_task_wrote_to_stderr() -> None:
    assert failure_for_exit(0, b"noise") == ""
    assert failure_for_exit(3) == "exited with code 3"
    trace = b"Traceback (most recent call last):\n  ...\nValueError: bad shape\n\n"
    assert failure_for_exit(1, trace) == "exited with code 1: ValueError: bad shape"
    assert failure_for_exit(None, "x" * 500).endswith("x…")
    assert len(failure_for_exit(2, "y" * 500)) == len("exited with code 2: ") + 200


def test_progress_is_read_only_from_a_regular_file_and_only_its_first_bytes(
    tmp_path: Path,
) -> None:
    progress = tmp_path / PROGRESS_FILE
    progress.write_text("42\n" + "9" * 10_000)
    assert read_progress(tmp_path) == 42.0
    progress.unlink()
    progress.symlink_to("/dev/zero")  # a task's trick: the volunteer would read for ever
    assert read_progress(tmp_path) is None
    progress.unlink()
    os.mkfifo(progress)  # a reader of a FIFO blocks until someone writes
    assert read_progress(tmp_path) is None


def test_the_telling_line_is_the_first_that_speaks_of_an_error_else_the_last() -> None:
    assert telling_line(b"reading\nERROR: no such file x.xsd\nIn: /input/s.xml\n") == (
        "ERROR: no such file x.xsd"
    )
    assert telling_line("a\nb\n\n") == "b"
    xerces = b"OpenMalaria\nunable to open primary document entity '/om/s.xsd'\nIn: /input/s.xml\n"
    assert telling_line(xerces) == "unable to open primary document entity '/om/s.xsd'"
    assert telling_line(b"") == ""
    trace = b'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: bad\n'
    assert telling_line(trace) == "ValueError: bad"


def test_a_log_buffer_keeps_the_end_and_says_it_was_cut() -> None:
    buffer = LogBuffer(limit=10)
    for chunk in (b"0123456789", b"abcdefghij", b"KLMNOPQRST", b"uv"):
        buffer.append(chunk)
    assert buffer.content == b"MNOPQRSTuv"
    assert buffer.cut
    whole = LogBuffer(limit=10)
    whole.append(b"short")
    assert (whole.content, whole.cut) == (b"short", False)
