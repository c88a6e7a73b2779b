"""What a task's files may be called: one rule, read by the workflow file, the splitters,
the manager and the volunteer, so that a name refused anywhere is refused everywhere, and
refused first where the person who chose it can fix it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# Where a task may write its progress (0-100); never one of its inputs or outputs.
PROGRESS_FILE = ".progress"
# The last word of an upload's purpose (`<task>:<attempt>:log`) for a task's stdout or
# stderr, which the manager counts apart from its outputs.
LOG_PURPOSE = "log"


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


def outputs_problem(declared: Sequence[str], produced: Sequence[str]) -> str | None:
    """Why a result naming the files `produced` is no result of a task that declared
    `declared` as its outputs (none declared: whatever it wrote), or None. Checked where
    results arrive: a task that reads another's output must find it there."""
    counts = Counter(produced)
    twice = sorted(name for name, count in counts.items() if count > 1)
    if twice:
        return f"names output {twice[0]!r} twice"
    if not declared:
        return None
    missing = sorted(set(declared) - set(counts))
    if missing:
        return f"lacks declared output{'s' if len(missing) > 1 else ''} {', '.join(missing[:3])}"
    extra = sorted(set(counts) - set(declared))
    if extra:
        return f"names undeclared output{'s' if len(extra) > 1 else ''} {', '.join(extra[:3])}"
    return None
