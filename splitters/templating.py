"""What the splitters that run a user's own command share: argv templates with `{name}`
placeholders, the user's script shipped to every task, the wrapper that records what a task
was, and the resources a user asks for.

Commands are argv lists, never shell lines: a word is one argument whatever it holds, so a
substituted value needs no quoting and cannot inject anything. Placeholders are str.format
braces restricted to plain names (`{alpha}`); `{{` and `}}` are literal braces, so Python
passed with `python3 -c` writes its dict literals as `{{...}}`. Format specs, conversions
and attribute or index access are refused: a value is substituted as text, and a typo
should be an error at split time, not a surprise inside a task.

Merge is given the tasks' outputs and nothing else (no parameters, another directory), and
a task uploads only its declared outputs. So a split that must tell merge what each task
was (its grid point, the input files of its batch) writes that down as a small record,
ships it as an input, and wraps the user's command in `batch_run.py`, which runs the
command and then copies the record to /output, where it is a declared output like any
other. The wrapper is stdlib Python: it runs in the generic image and in any user image
that has python3 on its PATH.
"""

from __future__ import annotations

import math
import re
import shutil
import string
from collections.abc import Collection, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from daemon.task_files import file_name_problem
from splitters.api import DEFAULT_IMAGE, Parameter, ResourceRequest, SplitterError

MIB = 1024 * 1024
# The placeholder that stands for /input/<the shipped script>.
SCRIPT = "script"
# The wrapper that runs a user's command and copies the task's record to /output.
WRAPPER = "batch_run.py"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMATTER = string.Formatter()
# Outputs a user command writes are unknown: this much disk on top of a task's inputs.
OUTPUT_ALLOWANCE_MB = 64


# --- placeholders -----------------------------------------------------------------------


def placeholders(word: str, key: str) -> list[str]:
    """The names of the `{name}` placeholders in `word`, in order; SplitterError on `key`
    when the braces are not plain placeholders."""
    hint = "write {{ and }} for literal braces"
    try:
        parsed = list(_FORMATTER.parse(word))
    except ValueError as error:
        raise SplitterError(key, f"{word!r}: {error} ({hint})") from None
    names = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field:
            raise SplitterError(key, f"{word!r} has an empty {{}}: name a placeholder ({hint})")
        if spec or conversion or _NAME.fullmatch(field) is None:
            shown = (
                "{"
                + field
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise SplitterError(
                key, f"{word!r}: {shown} is not a plain {{name}} placeholder ({hint})"
            )
        names.append(field)
    return names


def is_name(name: object) -> bool:
    """Whether `name` can be a placeholder: letters, digits and _, not starting with a digit."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_command(
    command: Sequence[Any], key: str, known: Collection[str], whole_words: Collection[str] = ()
) -> set[str]:
    """Checks an argv template: non-empty, every word a string, every placeholder one of
    `known` or `whole_words` (which stand for several words, so only as a word of their
    own). The placeholders it uses."""
    if not command:
        raise SplitterError(
            key, 'is empty: give the program and its arguments, e.g. ["python3", ...]'
        )
    used: set[str] = set()
    allowed = sorted({*known, *whole_words})
    for position, word in enumerate(command):
        if not isinstance(word, str):
            raise SplitterError(
                key, f"word {position + 1} is {word!r}: every word is a string (quote it)"
            )
        names = placeholders(word, key)
        for name in names:
            if name not in known and name not in whole_words:
                listed = ", ".join(f"{{{n}}}" for n in allowed) or "none"
                raise SplitterError(key, f"{word!r} uses {{{name}}}, which is not one of {listed}")
            if name in whole_words and word != f"{{{name}}}":
                raise SplitterError(
                    key,
                    f"{word!r}: {{{name}}} stands for several words, so it is a word of its own",
                )
        used.update(names)
    if not command[0]:
        raise SplitterError(key, "the first word (the program) is empty")
    return used


def render(word: str, values: Mapping[str, str]) -> str:
    """`word` with its placeholders replaced by `values` (checked beforehand)."""
    parts = []
    for literal, field, _, _ in _FORMATTER.parse(word):
        parts.append(literal)
        if field is not None:
            parts.append(values[field])
    return "".join(parts)


def render_command(
    command: Sequence[str],
    values: Mapping[str, str],
    lists: Mapping[str, Sequence[str]] | None = None,
) -> tuple[str, ...]:
    """The argv of one task: each word rendered, and a word that is exactly `{name}` of
    `lists` replaced by that list's words."""
    lists = lists or {}
    argv: list[str] = []
    for word in command:
        whole = word[1:-1] if word.startswith("{") and word.endswith("}") else None
        if whole is not None and whole in lists:
            argv.extend(lists[whole])
        else:
            argv.append(render(word, values))
    return tuple(argv)


def as_text(value: object) -> str:
    """A value as a command word: booleans as true/false (TOML's spelling), else str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- file names -------------------------------------------------------------------------


def check_file_name(name: str, key: str, what: str) -> None:
    problem = file_name_problem(name)
    if problem is not None:
        raise SplitterError(key, f"{what} {name!r} {problem}")


# --- the user's script and the wrapper --------------------------------------------------


def script_name(script: Path) -> str:
    """The name the script travels under: `script` and its suffix, e.g. script.py.

    Not the file's own name: the manager receives an uploaded file as `<parameter><suffix>`,
    so this is the one name that is the same on the client and on the manager."""
    return SCRIPT + script.suffix


def check_script(command: Sequence[str], used: set[str], script: Path | None) -> None:
    """`{script}` needs a script; a script is not reached under its own file name."""
    if SCRIPT in used and script is None:
        raise SplitterError("script", "required: the command uses {script}")
    if script is None or script.name == script_name(script):
        return
    wrong = f"/input/{script.name}"
    for word in command:
        if wrong in word:
            raise SplitterError(
                "command",
                f"{word!r}: the script travels as /input/{script_name(script)},"
                f" not {wrong}: write {{script}} for it",
            )


def ship_worker(workdir: Path, name: str) -> Path:
    """A script of splitters/workers, copied into the workdir to travel as an input."""
    target = workdir / name
    target.write_bytes(resources.files("splitters.workers").joinpath(name).read_bytes())
    return target


def wrapped(record: str, argv: Sequence[str]) -> tuple[str, ...]:
    """`argv` run by the wrapper, which copies /input/<record> to /output/<record> after the
    command succeeded; the task must ship WRAPPER and the record and declare the record as
    an output."""
    return ("python3", f"/input/{WRAPPER}", f"/input/{record}", f"/output/{record}", "--", *argv)


def link_or_copy(source: Path, target: Path) -> None:
    """`target` with the bytes of `source`: a hard link where the file system allows."""
    target.unlink(missing_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


# --- parameters and resources -----------------------------------------------------------


def command_parameters() -> tuple[Parameter, ...]:
    """The keys every user-command workflow takes besides its own: where and how it runs."""
    return (
        Parameter("image", str, "container image the command runs in", default=DEFAULT_IMAGE),
        Parameter(
            "script",
            Path,
            "a file shipped to every task as /input/script<its suffix>; {script} in the"
            " command stands for that path",
        ),
        Parameter("timeout_seconds", int, "wall-clock limit per task", default=600, minimum=1),
        Parameter("memory_mb", int, "memory per task, MiB", default=512, minimum=16),
        Parameter("cpus", float, "CPUs per task", default=1.0, minimum=0.1),
    )


def check_image(image: str) -> None:
    if not image.strip() or any(c.isspace() for c in image):
        raise SplitterError("image", f"{image!r} is not an image reference (e.g. {DEFAULT_IMAGE})")


def resources_for(params: Mapping[str, Any], input_bytes: int) -> ResourceRequest:
    """What a task asks for: the CPUs and memory given, and disk for its inputs plus an
    allowance for what the command writes."""
    return ResourceRequest(
        cpus=float(params["cpus"]),
        memory_mb=int(params["memory_mb"]),
        disk_mb=math.ceil(input_bytes / MIB) + OUTPUT_ALLOWANCE_MB,
    )


def file_size(path: Path | None) -> int:
    return 0 if path is None else path.stat().st_size
