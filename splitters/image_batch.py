"""A folder of files processed in batches by the user's command, in the user's image: one
task per `batch_size` files, every output gathered into the result with a manifest.

The files are those directly in `folder` that match `pattern`, hidden ones left out (as
they are when a folder travels with a workflow), sorted by name and cut into consecutive
batches. Each file is an input of its batch's task under its own name, and the command
(an argv; see splitters/templating.py) may say `{inputs}`, a word of its own that becomes
the batch's /input/<name> paths, and `{outputs}`, the /output/<name> paths it must write,
in the same order. The output of a file is named by the `outputs` template from the
file's `{name}`, `{stem}` and `{suffix}`; the default, `{name}`, keeps the file's name.
Every name is checked at split time: one that is no valid task file name, or two files
whose outputs would share a name, is an error on `folder` naming the files.

How merge learns which input gave which output: it is given only the tasks' outputs, so
the split writes each batch's (input, output) names as a record, batch.json, and the
command runs through the stdlib wrapper batch_run.py, which copies the record to /output
once the command succeeded. The image needs python3 on its PATH for the wrapper (the
generic image, Debian bookworm's python3 + numpy, has it). Merge writes every output under
its own name and `manifest.csv` (input, output, task, sha256, size), and fails when an
output is missing or two share a name.

`node init image_batch` has no folder to point at, and a workflow file that names one the
user has not made cannot run as written. So the example sets `demo`: the split generates
that many small random RGB images as .npy files, and the example's command turns them to
grayscale with numpy, in the generic image. For real work, remove `demo` and set `folder`;
with neither, the error on `folder` says exactly that.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.task_files import file_name_problem
from splitters import templating
from splitters.api import (
    Directory,
    Estimate,
    MergeError,
    Parameter,
    SplitterError,
    TaskTemplate,
    same_bytes,
)

RECORD = "batch.json"
MANIFEST = "manifest.csv"
INPUTS, OUTPUTS, BATCH = "inputs", "outputs", "batch"
OUTPUT_FIELDS = ("name", "stem", "suffix")
DEMO_SHAPE = (32, 32, 3)
DEMO_SEED = 0
# Well under Linux's limit for argv and environment together (2 MiB by default).
MAX_COMMAND_BYTES = 1_000_000
# Rough guesses for the estimate: a command's start, then per file and per byte.
STARTUP_SECONDS = 1.0
SECONDS_PER_FILE = 0.5
BYTES_PER_SECOND = 50e6
# Outputs are guessed as large as their inputs when asking for disk.
OUTPUT_SIZE_RATIO = 1.0

# The example: RGB -> grayscale (ITU-R 601 weights); argv is the inputs, then the outputs.
EXAMPLE_CODE = (
    "import sys; import numpy as np; paths = sys.argv[1:]; half = len(paths) // 2; "
    "[np.save(open(dst, 'wb'), (np.load(src) @ np.array([0.299, 0.587, 0.114]))"
    ".round().astype(np.uint8)) for src, dst in zip(paths[:half], paths[half:])]"
)


@dataclass(frozen=True)
class Item:
    """One file to process: its name (under /input), size, where it is (None for a demo
    image not generated yet) and the name of its output."""

    name: str
    size: int
    source: Path | None
    output: str


@dataclass(frozen=True)
class Plan:
    items: tuple[Item, ...]
    batch_size: int

    @property
    def batches(self) -> list[tuple[Item, ...]]:
        size = self.batch_size
        return [self.items[start : start + size] for start in range(0, len(self.items), size)]


# --- the files --------------------------------------------------------------------------


def _demo_bytes(count: int) -> list[bytes]:
    """The first `count` demo images as .npy bytes: random RGB from one seeded generator,
    so the same every time."""
    import numpy as np  # only the demo needs numpy

    rng = np.random.default_rng(DEMO_SEED)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        np.save(buffer, rng.integers(0, 256, DEMO_SHAPE, dtype=np.uint8), allow_pickle=False)
        images.append(buffer.getvalue())
    return images


def _demo_names(count: int) -> list[str]:
    width = len(str(count - 1))
    return [f"demo-{index:0{width}d}.npy" for index in range(count)]


def _candidates(params: Mapping[str, Any]) -> list[tuple[str, int, Path | None]]:
    """(name, size, path) of every non-hidden file of the folder or the demo, by name."""
    folder: Path | None = params["folder"]
    demo: int | None = params["demo"]
    if folder is not None and demo is not None:
        raise SplitterError("demo", "give either folder or demo, not both: remove demo")
    if demo is not None:
        size = len(_demo_bytes(1)[0])  # every demo image has one shape and type
        return [(name, size, None) for name in _demo_names(demo)]
    if folder is None:
        raise SplitterError(
            "folder",
            "required: the folder of files to process (or demo = 5 to try the workflow on five"
            " generated images)",
        )
    try:
        paths = [path for path in folder.iterdir() if path.is_file()]
    except OSError as error:
        raise SplitterError("folder", f"cannot list {folder}: {error.strerror}") from None
    return sorted(
        (path.name, path.stat().st_size, path) for path in paths if not path.name.startswith(".")
    )


def _matching(params: Mapping[str, Any]) -> list[tuple[str, int, Path | None]]:
    pattern: str = params["pattern"]
    if not pattern or "/" in pattern:
        raise SplitterError("pattern", f"{pattern!r} is not a file name pattern such as *.png")
    candidates = _candidates(params)
    matching = [entry for entry in candidates if fnmatch.fnmatchcase(entry[0], pattern)]
    if not matching:
        where = "the demo images" if params["demo"] is not None else str(params["folder"])
        found = _listed([entry[0] for entry in candidates]) or "none"
        raise SplitterError(
            "pattern", f"no file of {where} matches {pattern!r} (files there: {found})"
        )
    return matching


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _check_template(template: str) -> None:
    """SplitterError on `outputs` unless the template can name every file's output."""
    used = templating.placeholders(template, OUTPUTS)
    unknown = [name for name in used if name not in OUTPUT_FIELDS]
    if unknown:
        raise SplitterError(
            OUTPUTS, f"{{{unknown[0]}}} is not one of {{name}}, {{stem}}, {{suffix}}"
        )
    if "name" not in used and "stem" not in used:
        raise SplitterError(OUTPUTS, "needs {name} or {stem}, or every output has one name")


def _output_names(template: str, names: Sequence[str]) -> list[str]:
    """Each file's output name (from a checked template); SplitterError on `outputs` for a
    name that cannot be an output, on `folder` for files whose outputs would share one."""
    outputs = []
    for name in names:
        path = Path(name)
        output = templating.render(
            template, {"name": name, "stem": path.stem, "suffix": path.suffix}
        )
        problem = file_name_problem(output)
        if problem is None and output.startswith("."):
            problem = "is hidden"
        if problem is not None:
            raise SplitterError(OUTPUTS, f"names the output of {name} {output!r}, which {problem}")
        outputs.append(output)
    by_output: dict[str, list[str]] = {}
    for name, output in zip(names, outputs, strict=True):
        by_output.setdefault(output, []).append(name)
    fix = f"(outputs = {template!r}): rename or leave out files, or change outputs"
    for output, sources in by_output.items():
        if output in (RECORD, MANIFEST):
            raise SplitterError(
                "folder",
                f"the output of {sources[0]} would be {output}, a name kept for the workflow {fix}",
            )
        if len(sources) > 1:
            raise SplitterError(
                "folder", f"{_listed(sources)} would all write the output {output} {fix}"
            )
    return outputs


def _check_inputs(names: Sequence[str], script: Path | None) -> None:
    bad = [f"{name!r} {problem}" for name in names if (problem := file_name_problem(name))]
    if bad:
        raise SplitterError("folder", f"{_listed(bad)}: not usable as a task's input file name")
    reserved = {templating.WRAPPER, RECORD}
    if script is not None:
        reserved.add(templating.script_name(script))
    clashing = [name for name in names if name in reserved]
    if clashing:
        raise SplitterError(
            "folder",
            f"{_listed(clashing)}: the name of a file every task gets"
            f" ({', '.join(sorted(reserved))}); rename it, or leave it out with pattern",
        )


def _items(params: Mapping[str, Any]) -> tuple[Item, ...]:
    matching = _matching(params)
    names = [name for name, _, _ in matching]
    _check_inputs(names, params["script"])
    outputs = _output_names(params["outputs"], names)
    return tuple(
        Item(name, size, source, output)
        for (name, size, source), output in zip(matching, outputs, strict=True)
    )


# --- the command ------------------------------------------------------------------------


def _argv(
    command: Sequence[str], batch: int, items: Sequence[Item], script: Path | None
) -> tuple[str, ...]:
    values = {BATCH: str(batch)}
    if script is not None:
        values[templating.SCRIPT] = f"/input/{templating.script_name(script)}"
    lists = {
        INPUTS: [f"/input/{item.name}" for item in items],
        OUTPUTS: [f"/output/{item.output}" for item in items],
    }
    return templating.wrapped(RECORD, templating.render_command(command, values, lists))


def _check_command(params: Mapping[str, Any]) -> None:
    command: Sequence[Any] = params["command"]
    used = templating.check_command(
        command, "command", {BATCH, templating.SCRIPT}, whole_words={INPUTS, OUTPUTS}
    )
    templating.check_script(command, used, params["script"])


def _check_length(params: Mapping[str, Any], plan: Plan) -> None:
    for index, batch in enumerate(plan.batches):
        argv = _argv(params["command"], index, batch, params["script"])
        size = sum(len(word.encode()) + 1 for word in argv)
        if size > MAX_COMMAND_BYTES:
            raise SplitterError(
                "batch_size",
                f"the command of batch {index} would be {size} bytes long, more than a"
                f" command line holds ({MAX_COMMAND_BYTES}): give a smaller batch_size",
            )


def plan(params: Mapping[str, Any]) -> Plan:
    """Checks every parameter against the others and the files (SplitterError listing
    each problem, by key); the files and their batches. Writes nothing."""
    problems: list[SplitterError] = []
    try:
        _check_command(params)
    except SplitterError as error:
        problems.append(error)
    try:
        templating.check_image(params["image"])
    except SplitterError as error:
        problems.append(error)
    items: tuple[Item, ...] = ()
    try:
        _check_template(params[OUTPUTS])
        items = _items(params)
    except SplitterError as error:
        problems.append(error)
    if problems:
        raise SplitterError.combine(problems)
    result = Plan(items, params["batch_size"])
    _check_length(params, result)
    return result


# --- the splitter -----------------------------------------------------------------------


class ImageBatch:
    name = "image_batch"
    description = (
        "process a folder's files in batches with your command and image ({inputs} and"
        " {outputs} in its argv); the outputs gathered with a manifest.csv"
    )
    parameters: tuple[Parameter, ...] = (
        Parameter(
            "folder",
            Directory,
            "the folder whose files are processed (files directly in it, hidden ones left out)",
        ),
        Parameter(
            "demo",
            int,
            "instead of folder, to try the workflow: generate this many 32x32 RGB .npy images"
            " (remove it and set folder for real work)",
            minimum=1,
            maximum=1000,
        ),
        Parameter("pattern", str, "which files of the folder, e.g. *.png", default="*"),
        Parameter("batch_size", int, "files per task", default=10, minimum=1),
        Parameter(
            "command",
            list,
            "the argv each batch runs; {inputs} stands for its input paths, {outputs} for the"
            " output paths it must write (same order), {batch} for its number, {script} for"
            " the shipped script",
            required=True,
        ),
        Parameter(
            "outputs",
            str,
            "each file's output name, from its {name}, {stem} and {suffix}",
            default="{name}",
        ),
        *templating.command_parameters(),
    )
    example: Mapping[str, Any] = {
        "demo": 5,
        "batch_size": 2,
        "command": ["python3", "-c", EXAMPLE_CODE, "{inputs}", "{outputs}"],
        "outputs": "{stem}-gray{suffix}",
    }

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        return _estimate(params, plan(params))

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        checked = plan(params)  # checks every parameter before anything is written
        estimate = _estimate(params, checked)
        sources = _sources(checked, workdir)
        shared: dict[str, Path] = {
            templating.WRAPPER: templating.ship_worker(workdir, templating.WRAPPER)
        }
        script: Path | None = params["script"]
        if script is not None:
            name = templating.script_name(script)
            shared[name] = workdir / name
            shared[name].write_bytes(script.read_bytes())
        batches = checked.batches
        width = len(str(len(batches) - 1))
        tasks = []
        for index, batch in enumerate(batches):
            task = f"batch-{index:0{width}d}"
            record = workdir / f"{task}.json"
            files = [{"input": item.name, "output": item.output} for item in batch]
            record.write_text(json.dumps({"batch": index, "count": len(batches), "files": files}))
            tasks.append(
                TaskTemplate(
                    name=task,
                    command=_argv(params["command"], index, batch, script),
                    inputs={
                        **shared,
                        RECORD: record,
                        **{item.name: sources[item.name] for item in batch},
                    },
                    outputs=(*(item.output for item in batch), RECORD),
                    resources=estimate.resources,
                    timeout_seconds=params["timeout_seconds"],
                    image=params["image"],
                )
            )
        return tasks

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        """Two copies agree only byte for byte. batch.json is the split's record, copied
        as it is; the other outputs are whatever the user's command makes of the files, in
        the user's image: images, arrays, anything, of a format and an exactness nothing
        here knows. The manifest records each output's sha256, and a command run on the
        same files in the same image must write the same bytes to be confirmed (one that
        stamps times into its files never will)."""
        return same_bytes(a, b)

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        rows: list[tuple[str, str, str, str, int]] = []
        results: list[Path] = []
        written: dict[str, str] = {}  # output name -> task
        for batch in _read_batches(outputs):
            for input_name, output in batch.files:
                if output not in batch.outputs:
                    raise MergeError(f"{batch.task} produced no {output} (for {input_name})")
                if output in written:
                    raise MergeError(f"{written[output]} and {batch.task} both wrote {output}")
                written[output] = batch.task
                target = workdir / output
                templating.link_or_copy(batch.outputs[output], target)
                with target.open("rb") as file:
                    sha256 = hashlib.file_digest(file, "sha256").hexdigest()
                rows.append((input_name, output, batch.task, sha256, target.stat().st_size))
                results.append(target)
        manifest = workdir / MANIFEST
        with manifest.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(("input", "output", "task", "sha256", "size"))
            writer.writerows(rows)
        return [*results, manifest]


def _estimate(params: Mapping[str, Any], checked: Plan) -> Estimate:
    """Sized by the batch with the most bytes; the seconds a guess from files and bytes."""
    batches = checked.batches
    largest = max(sum(item.size for item in batch) for batch in batches)
    files = max(len(batch) for batch in batches)
    input_bytes = largest + templating.file_size(params["script"])
    seconds = STARTUP_SECONDS + files * SECONDS_PER_FILE + largest / BYTES_PER_SECOND
    return Estimate(
        task_count=len(batches),
        resources=templating.resources_for(
            params, input_bytes + math.ceil(largest * OUTPUT_SIZE_RATIO)
        ),
        seconds_per_task=min(float(params["timeout_seconds"]), seconds),
    )


def _sources(checked: Plan, workdir: Path) -> dict[str, Path]:
    """Each file's local path. A folder's files are used where they are (the manager
    hashes them into its store at submit, and a copy would double a large folder on
    disk); demo images are written into the workdir first."""
    demo = [item for item in checked.items if item.source is None]
    if demo:
        folder = workdir / "demo"
        folder.mkdir()
        by_name = dict(
            zip(_demo_names(len(checked.items)), _demo_bytes(len(checked.items)), strict=True)
        )
        for item in demo:
            (folder / item.name).write_bytes(by_name[item.name])
    return {
        item.name: item.source if item.source is not None else workdir / "demo" / item.name
        for item in checked.items
    }


# --- merge ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    task: str
    index: int
    count: int
    files: tuple[tuple[str, str], ...]  # (input name, output name)
    outputs: Mapping[str, Path]


def _read_batch(task: str, outputs: Mapping[str, Path]) -> Batch:
    if RECORD not in outputs:
        raise MergeError(f"{task} produced no {RECORD}: it is not a batch of this workflow")
    try:
        record = json.loads(outputs[RECORD].read_text(encoding="utf-8"))
        index, count = record["batch"], record["count"]
        files = tuple((entry["input"], entry["output"]) for entry in record["files"])
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise MergeError(f"{task}: {RECORD} is not a batch record: {error}") from error
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise MergeError(f"{task}: {RECORD} has batch {index!r} of {count!r}")
    for input_name, output in files:
        if not isinstance(input_name, str) or not isinstance(output, str):
            raise MergeError(f"{task}: {RECORD} is not a batch record")
        # The name becomes a file of the merge's directory: it must stay a plain name.
        if file_name_problem(output) or output.startswith(".") or output == MANIFEST:
            raise MergeError(f"{task}: {output!r} cannot be a result's name")
    return Batch(task, index, count, files, outputs)


def _read_batches(outputs: Mapping[str, Mapping[str, Path]]) -> list[Batch]:
    """Every batch in order; MergeError unless they are exactly one workflow's batches."""
    batches = sorted(
        (_read_batch(task, files) for task, files in outputs.items()), key=lambda b: b.index
    )
    if not batches:
        raise MergeError("no batch outputs to merge")
    seen: dict[int, str] = {}
    for batch in batches:
        if batch.count != batches[0].count:
            raise MergeError(
                f"{batch.task} and {batches[0].task} are batches of different workflows"
            )
        if batch.index in seen:
            raise MergeError(f"{seen[batch.index]} and {batch.task} are both batch {batch.index}")
        seen[batch.index] = batch.task
    missing = [str(index) for index in range(batches[0].count) if index not in seen]
    if missing:
        raise MergeError(f"missing the output of batch {_listed(missing)}")
    return batches
