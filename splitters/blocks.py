"""Block arithmetic shared by the matrix splitters: operands, grids, resources, assembly.

Both matrix workflows take A and B as .npy files (`a`, `b`) or generate them (`size`,
`seed`), cut the result C into a `blocks` x `blocks` grid, run one task per block and put
the blocks back together. Rows and columns that do not divide evenly go to the first blocks
(one extra each), as numpy.array_split does. Operand files are memory-mapped, so the
manager never holds more of them than the panel it is writing.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from splitters.api import Estimate, MergeError, Parameter, ResourceRequest, SplitterError

MIB = 1024 * 1024
BLOCK_OUTPUT = "c_block.npy"
RESULT_FILE = "C.npy"
# Resident size of python3 + numpy in the worker image before any data, with slack.
WORKER_OVERHEAD_MB = 64
# Data in memory is the largest task's inputs and output; numpy temporaries ride on top.
MEMORY_HEADROOM = 1.5
# Deliberately slow guesses (the worker image's reference BLAS on a busy volunteer), so an
# estimate errs towards a timeout that is too long rather than too short.
FLOPS_PER_SECOND = 1e9
BYTES_PER_SECOND = 100e6
STARTUP_SECONDS = 1.0
# bool, signed and unsigned integers, floats, complex: what numpy arithmetic is defined on.
NUMERIC_KINDS = "biufc"
NPY_MAGIC = b"\x93NUMPY"
_BLOCK_NAME = re.compile(r"block-(\d+)-(\d+)")


def parameters(operation: str) -> tuple[Parameter, ...]:
    """The keys both matrix workflows take; `operation` words their help."""
    return (
        Parameter("a", Path, f"A for {operation}: a 2-D numeric .npy file (or give size)"),
        Parameter("b", Path, f"B for {operation}: a 2-D numeric .npy file (or give size)"),
        Parameter("size", int, "generate A and B as random n x n matrices", minimum=1),
        Parameter("seed", int, "random seed for size", default=0, minimum=0),
        Parameter("blocks", int, "C is cut into a blocks x blocks grid", default=2, minimum=1),
        Parameter("memory_mb", int, "memory per task (default: from the block sizes)", minimum=1),
        Parameter("timeout_seconds", int, "wall-clock limit per task", default=600, minimum=1),
    )


# --- operands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operand:
    """What the splitter needs to know about A or B before reading any of its data."""

    key: str  # the parameter it came from, to name in errors
    shape: tuple[int, int]
    dtype: np.dtype[Any]

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]


def _check_sources(params: Mapping[str, Any]) -> bool:
    """True when A and B come from files, False when generated."""
    a, b, size = params["a"], params["b"], params["size"]
    if size is not None and (a is not None or b is not None):
        raise SplitterError("size", "give either size or the files a and b, not both")
    if size is not None:
        return False
    if a is None:
        raise SplitterError("a", "required: a .npy file for A (or give size instead)")
    if b is None:
        raise SplitterError("b", "required: a .npy file for B, since a is given")
    return True


def _open(key: str, path: Path) -> NDArray[Any]:
    """The array in a .npy file, memory-mapped and checked; SplitterError naming `key`."""
    try:
        with path.open("rb") as file:
            is_npy = file.read(len(NPY_MAGIC)) == NPY_MAGIC
        # Checked first: numpy calls any other file "pickled data", which misleads.
        if not is_npy:
            raise SplitterError(key, f"{path} is not a .npy file (numpy.save writes those)")
        array: NDArray[Any] = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise SplitterError(key, f"{path} is not a readable .npy array: {error}") from error
    if array.ndim != 2:
        raise SplitterError(key, f"{path} holds a {array.ndim}-D array; a matrix is 2-D")
    if array.dtype.kind not in NUMERIC_KINDS:
        raise SplitterError(key, f"{path} holds {array.dtype} values; a matrix is numeric")
    if array.size == 0:
        raise SplitterError(key, f"{path} holds an empty {array.shape[0]}x{array.shape[1]} array")
    return array


def operands(params: Mapping[str, Any]) -> tuple[Operand, Operand]:
    """Shapes and types of A and B, from the files' headers or from `size`."""
    if _check_sources(params):
        a, b = _open("a", params["a"]), _open("b", params["b"])
        return (
            Operand("a", (a.shape[0], a.shape[1]), a.dtype),
            Operand("b", (b.shape[0], b.shape[1]), b.dtype),
        )
    n = params["size"]
    float64 = np.dtype(np.float64)
    return Operand("a", (n, n), float64), Operand("b", (n, n), float64)


def generate(size: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A and B for `size` and `seed`: standard normal, A drawn first, from one generator."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((size, size)), rng.standard_normal((size, size))


def arrays(params: Mapping[str, Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """A and B themselves: memory-mapped files, or generated."""
    if _check_sources(params):
        return _open("a", params["a"]), _open("b", params["b"])
    return generate(params["size"], params["seed"])


# --- the grid ---------------------------------------------------------------------------


def bounds(length: int, parts: int) -> tuple[tuple[int, int], ...]:
    """[start, stop) of each part; the first `length % parts` parts are one longer."""
    base, extra = divmod(length, parts)
    edges = [0]
    for index in range(parts):
        edges.append(edges[-1] + base + (1 if index < extra else 0))
    return tuple(itertools.pairwise(edges))


def largest(length: int, parts: int) -> int:
    """The length of the first (largest) part."""
    return -(-length // parts)


def check_grid(blocks: int, rows: Operand, cols: Operand) -> None:
    """Every block needs at least one row of `rows` and one column of `cols`."""
    for operand, count, what in ((rows, rows.rows, "rows"), (cols, cols.cols, "columns")):
        if blocks > count:
            raise SplitterError(
                "blocks",
                f"{blocks} blocks per side need at least {blocks} {what},"
                f" but {operand.key.upper()} has {count}",
            )


def block_name(row: int, col: int) -> str:
    return f"block-{row}-{col}"


def save(path: Path, array: NDArray[Any]) -> Path:
    # A contiguous copy: the same panel always serialises to the same bytes (and hash).
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return path


def ship_worker(workdir: Path, script: str) -> Path:
    """The worker script, copied from splitters/workers into the workdir; it travels to the
    volunteer as a task input of the same name and runs in the generic worker image."""
    target = workdir / script
    target.write_bytes(resources.files("splitters.workers").joinpath(script).read_bytes())
    return target


# --- resources --------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockWork:
    """The largest task of a workflow: bytes it reads and writes, and arithmetic it does."""

    input_bytes: int
    output_bytes: int
    flops: float

    @property
    def data_bytes(self) -> int:
        return self.input_bytes + self.output_bytes


def resources_for(work: BlockWork, memory_mb: int | None) -> ResourceRequest:
    """One CPU; memory from the data unless `memory_mb` was given (it must hold the data)."""
    data_mb = math.ceil(work.data_bytes / MIB)
    floor_mb = data_mb + WORKER_OVERHEAD_MB
    if memory_mb is None:
        memory_mb = math.ceil(work.data_bytes * MEMORY_HEADROOM / MIB) + WORKER_OVERHEAD_MB
    elif memory_mb < floor_mb:
        raise SplitterError(
            "memory_mb",
            f"{memory_mb} MiB cannot hold the largest block's {data_mb} MiB of data"
            f" and the worker; give at least {floor_mb}",
        )
    return ResourceRequest(cpus=1.0, memory_mb=memory_mb, disk_mb=data_mb + 1)


def seconds_for(work: BlockWork) -> float:
    return STARTUP_SECONDS + work.flops / FLOPS_PER_SECOND + work.data_bytes / BYTES_PER_SECOND


# Checks A and B against each other and the grid (SplitterError naming the key to fix)
# and returns the work of the largest task: all a matrix workflow adds to the shared code.
Plan = Callable[[Operand, Operand, int], BlockWork]


def estimate(params: Mapping[str, Any], plan: Plan) -> Estimate:
    """Estimate of a matrix workflow: one task per block, sized by its largest block."""
    a, b = operands(params)
    grid: int = params["blocks"]
    work = plan(a, b, grid)
    return Estimate(
        task_count=grid * grid,
        resources=resources_for(work, params["memory_mb"]),
        seconds_per_task=seconds_for(work),
    )


# --- merge ------------------------------------------------------------------------------


def _load_block(task: str, path: Path) -> NDArray[Any]:
    try:
        block: NDArray[Any] = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise MergeError(f"{task}: {BLOCK_OUTPUT} is not a readable .npy array: {error}") from error
    if not isinstance(block, np.ndarray) or block.ndim != 2:
        raise MergeError(f"{task}: {BLOCK_OUTPUT} is not a 2-D array")
    return block


def assemble(outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> Path:
    """C from the `c_block.npy` of every `block-i-j` task, written to workdir/C.npy.

    The grid comes from the task names and the block shapes alone, so merge needs nothing
    from split (the manager may have restarted in between); everything is cross-checked.
    """
    found: dict[tuple[int, int], NDArray[Any]] = {}
    for task, files in outputs.items():
        match = _BLOCK_NAME.fullmatch(task)
        if match is None:
            raise MergeError(f"{task} is not a block task of this workflow")
        if BLOCK_OUTPUT not in files:
            raise MergeError(f"{task} produced no {BLOCK_OUTPUT}")
        found[(int(match[1]), int(match[2]))] = _load_block(task, files[BLOCK_OUTPUT])
    if not found:
        raise MergeError("no block outputs to merge")
    grid_rows = 1 + max(row for row, _ in found)
    grid_cols = 1 + max(col for _, col in found)
    missing = [
        block_name(row, col)
        for row in range(grid_rows)
        for col in range(grid_cols)
        if (row, col) not in found
    ]
    if missing:
        raise MergeError(f"missing the output of {', '.join(missing)}")
    heights = [found[(row, 0)].shape[0] for row in range(grid_rows)]
    widths = [found[(0, col)].shape[1] for col in range(grid_cols)]
    for (row, col), block in found.items():
        if block.shape != (heights[row], widths[col]):
            raise MergeError(
                f"{block_name(row, col)} is {block.shape[0]}x{block.shape[1]}, but its row"
                f" of blocks is {heights[row]} high and its column {widths[col]} wide"
            )
    dtype = np.result_type(*(block.dtype for block in found.values()))
    target = workdir / RESULT_FILE
    partial = workdir / (RESULT_FILE + ".partial")
    # Written in place through a memory map, then renamed: C never sits whole in memory,
    # and a crash mid-merge leaves no C.npy that looks finished.
    result = np.lib.format.open_memmap(
        partial, mode="w+", dtype=dtype, shape=(sum(heights), sum(widths))
    )
    row_edges = np.cumsum([0, *heights])
    col_edges = np.cumsum([0, *widths])
    for (row, col), block in found.items():
        result[row_edges[row] : row_edges[row + 1], col_edges[col] : col_edges[col + 1]] = block
    result.flush()
    del result
    os.replace(partial, target)
    return target
