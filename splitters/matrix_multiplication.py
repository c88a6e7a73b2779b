"""C = A·B with a 2-D block decomposition: task (i, j) computes C[i, j] = A_i · B_j.

A_i is row panel i of A (its rows of block row i, every column) and B_j is column panel j of
B (every row, its columns of block column j). Each panel is written once and shared by the
`blocks` tasks that need it, so the same file (and content hash) serves them all and the
volunteers' caches and transfers dedupe it. A grid of g x g tasks moves 2g panels, each
task reading one A panel and one B panel.

When panels are too big for a volunteer, the shared dimension k is cut too (`inner_blocks`,
or chosen from `memory_mb`): task `partial-i-j-k` computes A_ik · B_kj, and a reduce task
`block-i-j`, which depends on them and reads their outputs, adds them into C[i, j].

Two volunteers' copies of a block agree when they are within rounding of each other (see
`MatrixMultiplication.equivalent`): the same product, added up in another order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from splitters import blocks
from splitters.api import Estimate, Parameter, SplitterError, TaskOutput, TaskTemplate, same_bytes
from splitters.equivalence import EXACT, Tolerance, close_arrays

WORKER = "matmul_block.py"
REDUCER = "sum_blocks.py"
A_INPUT = "a_panel.npy"
B_INPUT = "b_panel.npy"
PARTIAL_OUTPUT = "partial.npy"
PARTIAL_PREFIX = "partial-"
INNER_KEY = "inner_blocks"
# Relative tolerance of two copies of a block, by the precision of its floating-point type
# (bits of the real part): see MatrixMultiplication.equivalent.
RTOL_BY_BITS = ((64, 1e-9), (32, 1e-4), (0, 1e-2))


def block_tolerance(dtype: np.dtype[Any]) -> Tolerance:
    """How far two copies of a product block of this type may be apart: exact for
    integers and booleans, else RTOL_BY_BITS of each value and of the block's magnitude."""
    if dtype.kind not in "fc":
        return EXACT
    bits = np.finfo(dtype).bits
    rtol = next(rtol for least, rtol in RTOL_BY_BITS if bits >= least)
    return Tolerance(rtol=rtol, scaled_atol=rtol)


def _multiply(output: str) -> tuple[str, ...]:
    return ("python3", f"/input/{WORKER}", f"/input/{A_INPUT}", f"/input/{B_INPUT}", output)


COMMAND = _multiply(f"/output/{blocks.BLOCK_OUTPUT}")


def _check(a: blocks.Operand, b: blocks.Operand, grid: int, inner: int) -> None:
    if a.cols != b.rows:
        raise SplitterError(
            "b",
            f"B is {b.rows}x{b.cols} but A is {a.rows}x{a.cols}:"
            f" A·B needs B to have {a.cols} rows (A's columns)",
        )
    blocks.check_grid(grid, a, b)
    if inner > a.cols:
        raise SplitterError(INNER_KEY, f"{inner} parts need at least {inner} columns in A")


def _works(
    a: blocks.Operand, b: blocks.Operand, grid: int, inner: int
) -> tuple[blocks.BlockWork, blocks.BlockWork | None]:
    """The largest multiplying task, and the largest reduce task when k is cut."""
    rows, cols = blocks.largest(a.rows, grid), blocks.largest(b.cols, grid)
    depth = blocks.largest(a.cols, inner)
    out_size = np.result_type(a.dtype, b.dtype).itemsize
    multiply = blocks.BlockWork(
        input_bytes=rows * depth * a.dtype.itemsize + depth * cols * b.dtype.itemsize,
        output_bytes=rows * cols * out_size,
        flops=2.0 * rows * depth * cols,
    )
    if inner == 1:
        return multiply, None
    # The reducer holds the running sum and one partial at a time.
    reduce = blocks.BlockWork(
        input_bytes=rows * cols * out_size,
        output_bytes=rows * cols * out_size,
        flops=float(inner * rows * cols),
    )
    return multiply, reduce


def _fits(work: blocks.BlockWork, memory_mb: int) -> bool:
    return math.ceil(work.data_bytes / blocks.MIB) + blocks.WORKER_OVERHEAD_MB <= memory_mb


def _inner(params: Mapping[str, Any], a: blocks.Operand, b: blocks.Operand, grid: int) -> int:
    """`inner_blocks` as given; else 1, or the fewest parts whose tasks fit `memory_mb`."""
    given: int | None = params[INNER_KEY]
    if given is not None:
        return given
    memory_mb: int | None = params["memory_mb"]
    if memory_mb is None:
        return 1
    for inner in range(1, a.cols + 1):
        if all(w is None or _fits(w, memory_mb) for w in _works(a, b, grid, inner)):
            return inner
    return 1  # nothing fits: resources_for says how much memory the blocks need


def _part(k: int, inner: int) -> str:
    """A panel's file names say its part of k only when k is cut."""
    return f"_{k}" if inner > 1 else ""


class MatrixMultiplication:
    name = "matrix_multiplication"
    description = "C = A·B, one task per block of C (row panel of A times column panel of B)"
    # `node init`: a generated instance that runs in seconds on two volunteers.
    example: Mapping[str, Any] = {"size": 512, "blocks": 2, "seed": 1}
    parameters: tuple[Parameter, ...] = (
        *blocks.parameters("A·B"),
        Parameter(
            INNER_KEY,
            int,
            "cut A's columns (B's rows) into this many parts, each block of C then being a sum"
            " of partial products added by a reduce task: less data per task, for volunteers"
            " with little memory (default: 1, or as many as memory_mb needs)",
            minimum=1,
        ),
    )

    def _plan(self, params: Mapping[str, Any]) -> tuple[int, int, Estimate, Estimate | None]:
        """Checks every parameter; grid, inner parts, and the estimates of both stages."""
        a, b = blocks.operands(params)
        grid: int = params["blocks"]
        _check(a, b, grid, params[INNER_KEY] or 1)
        inner = _inner(params, a, b, grid)
        _check(a, b, grid, inner)
        multiply, reduce = _works(a, b, grid, inner)
        memory_mb: int | None = params["memory_mb"]
        first = Estimate(
            task_count=grid * grid * inner,
            resources=blocks.resources_for(multiply, memory_mb),
            seconds_per_task=blocks.seconds_for(multiply),
        )
        if reduce is None:
            return grid, inner, first, None
        summed = Estimate(
            task_count=grid * grid,
            # Its k partials wait on disk; memory holds two blocks.
            resources=replace(
                blocks.resources_for(reduce, memory_mb),
                disk_mb=math.ceil(inner * reduce.output_bytes / blocks.MIB) + 1,
            ),
            seconds_per_task=blocks.seconds_for(reduce),
        )
        return grid, inner, first, summed

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        _, _, multiply, reduce = self._plan(params)
        if reduce is None:
            return multiply
        return replace(multiply, task_count=multiply.task_count + reduce.task_count)

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        grid, inner, multiply, reduce = self._plan(params)  # before anything is written
        a, b = blocks.arrays(params)
        worker = blocks.ship_worker(workdir, WORKER)
        row_bounds = blocks.bounds(a.shape[0], grid)
        col_bounds = blocks.bounds(b.shape[1], grid)
        inner_bounds = blocks.bounds(a.shape[1], inner)
        a_panels = [
            [
                blocks.save(workdir / f"a_panel_{i}{_part(k, inner)}.npy", a[r0:r1, d0:d1])
                for k, (d0, d1) in enumerate(inner_bounds)
            ]
            for i, (r0, r1) in enumerate(row_bounds)
        ]
        b_panels = [
            [
                blocks.save(workdir / f"b_panel{_part(k, inner)}_{j}.npy", b[d0:d1, c0:c1])
                for k, (d0, d1) in enumerate(inner_bounds)
            ]
            for j, (c0, c1) in enumerate(col_bounds)
        ]
        timeout: int = params["timeout_seconds"]
        if reduce is None:
            return [
                TaskTemplate(
                    name=blocks.block_name(i, j),
                    command=COMMAND,
                    inputs={WORKER: worker, A_INPUT: a_panels[i][0], B_INPUT: b_panels[j][0]},
                    outputs=(blocks.BLOCK_OUTPUT,),
                    resources=multiply.resources,
                    timeout_seconds=timeout,
                )
                for i in range(grid)
                for j in range(grid)
            ]
        reducer = blocks.ship_worker(workdir, REDUCER)
        tasks = []
        for i in range(grid):
            for j in range(grid):
                partials = [f"{PARTIAL_PREFIX}{i}-{j}-{k}" for k in range(inner)]
                tasks += [
                    TaskTemplate(
                        name=name,
                        command=_multiply(f"/output/{PARTIAL_OUTPUT}"),
                        inputs={WORKER: worker, A_INPUT: a_panels[i][k], B_INPUT: b_panels[j][k]},
                        outputs=(PARTIAL_OUTPUT,),
                        resources=multiply.resources,
                        timeout_seconds=timeout,
                    )
                    for k, name in enumerate(partials)
                ]
                tasks.append(
                    TaskTemplate(
                        name=blocks.block_name(i, j),
                        command=(
                            "python3",
                            f"/input/{REDUCER}",
                            f"/output/{blocks.BLOCK_OUTPUT}",
                            *(f"/input/partial-{k}.npy" for k in range(inner)),
                        ),
                        inputs={
                            REDUCER: reducer,
                            **{
                                f"partial-{k}.npy": TaskOutput(name, PARTIAL_OUTPUT)
                                for k, name in enumerate(partials)
                            },
                        },
                        outputs=(blocks.BLOCK_OUTPUT,),
                        resources=reduce.resources,
                        timeout_seconds=timeout,
                        depends_on=tuple(partials),
                    )
                )
        return tasks

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        """Two copies of a block (or of a partial product) agree when they have one shape
        and dtype and their values are equal within rounding.

        Why they differ: each element is a sum of k products, and BLAS adds them in an
        order of its own, chosen by the CPU (kernels for AVX2, AVX-512, NEON, with or
        without fused multiply-add) and the library and its version (a volunteer without
        Docker runs its host's numpy). Each order rounds differently: the errors grow with
        the number of terms and with the size of the terms, not of the result, so a sum
        that cancels to a small element carries an error the size of its large terms.

        Tolerance, float64: |x - y| <= 1e-9 * min(|x|, |y|) + 1e-9 * scale, scale being
        the block's largest finite |value| (of the copy whose largest is smaller, so a
        forged huge value does not widen it). The relative part covers elements of the
        block's own size; the part relative to the scale covers small elements that are
        what is left of cancelling sums, whose rounding error is relative to the terms'
        size, of which the block's magnitude is the measure at hand (the inputs are not).
        Roundoff in float64 is 1.1e-16 per operation and grows like sqrt(k) in practice,
        1e-13 for k = 1e6 terms: 1e-9 leaves a margin of 1e4 for cancellation, and lets
        through no change larger than a billionth of the block's magnitude (the last 22
        of a float64's 52 fraction bits), no error to bend a result with; wrong
        arithmetic, a byte corrupted above those bits, other inputs or a forged block are
        caught. (A product that cancels more, as an ill-conditioned matrix times its
        inverse does, can make honest copies disagree.) float32 blocks get 1e-4 (roundoff
        6e-8, times sqrt(k)), float16 1e-2;
        integer and boolean products are exact in any order (integers wrap the same way),
        so they must be equal. NaN agrees with NaN (another CPU writes another NaN bit
        pattern); .npy headers and byte order may differ, the values may not.
        """
        if output in (blocks.BLOCK_OUTPUT, PARTIAL_OUTPUT):
            return close_arrays(a, b, block_tolerance)
        return same_bytes(a, b)

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        # Partial products are intermediate: the reduce tasks' blocks are C.
        final = {task: files for task, files in outputs.items() if not task.startswith("partial-")}
        return [blocks.assemble(final, workdir)]
