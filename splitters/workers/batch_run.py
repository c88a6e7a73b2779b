"""Runs a user's command inside a task, then records what the task was for the merge.

Usage: python3 batch_run.py RECORD_IN RECORD_OUT -- COMMAND [ARG...]

The parameter_sweep and image_batch splitters wrap every task's command in this script: it
runs COMMAND (an argv, no shell) with this process's environment and working directory,
and when it succeeds copies RECORD_IN (a small JSON file the split wrote: the task's grid
point, or its batch's input and output names) to RECORD_OUT, a declared output. Merge is
given only the tasks' outputs, so this is how it learns what each task was.

Self-contained on purpose: it travels as the task input /input/batch_run.py and runs in
the generic worker image and in any user image with python3 (3.7 or later), so it imports
only the standard library. Progress goes to .progress beside RECORD_OUT, i.e.
/output/.progress: 0 before the command (which may write its own), 100 once recorded. The
exit code is the command's (128 + N when signal N killed it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def report(record_out: Path, percent: int) -> None:
    (record_out.parent / ".progress").write_text(f"{percent}\n")


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: batch_run.py RECORD_IN RECORD_OUT -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    record_in, record_out, command = Path(argv[0]), Path(argv[1]), argv[3:]
    report(record_out, 0)
    try:
        code = subprocess.call(command)
    except OSError as error:  # not found, not executable
        print(f"cannot run {command[0]}: {error}", file=sys.stderr)
        return 127
    if code < 0:
        print(f"{command[0]} was killed by signal {-code}", file=sys.stderr)
        return 128 - code
    if code != 0:
        return code
    shutil.copyfile(str(record_in), str(record_out))
    report(record_out, 100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
