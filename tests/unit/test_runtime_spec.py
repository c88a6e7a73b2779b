"""What a volunteer says about a task that failed by itself."""

from __future__ import annotations

from daemon.runtime.spec import failure_for_exit


def test_a_failure_says_the_last_line_the_task_wrote_to_stderr() -> None:
    assert failure_for_exit(0, b"noise") == ""
    assert failure_for_exit(3) == "exited with code 3"
    trace = b"Traceback (most recent call last):\n  ...\nValueError: bad shape\n\n"
    assert failure_for_exit(1, trace) == "exited with code 1: ValueError: bad shape"
    assert failure_for_exit(None, "x" * 500).endswith("x…")
    assert len(failure_for_exit(2, "y" * 500)) == len("exited with code 2: ") + 200
