"""What a task's files may be called: one rule, read by the workflow file, the splitters,
the manager and the volunteer, so that a name refused anywhere is refused everywhere, and
refused first where the person who chose it can fix it."""

from __future__ import annotations

# Where a task may write its progress (0-100); never one of its inputs or outputs.
PROGRESS_FILE = ".progress"


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot name a task's input or output file, or None if it can: it must be
    a plain name (the volunteer joins it to /input or /output), valid UTF-8, and not the
    progress file."""
    if not name or name in (".", ".."):
        return "is not a file name"
    if any(c in name for c in "/\\\0"):
        return "holds a slash or NUL, so it is not a plain file name"
    if name == PROGRESS_FILE:
        return "is the name of a task's progress file"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None
