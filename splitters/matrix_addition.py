"""C = A + B, one task per block of a `blocks` x `blocks` grid: task (i, j) adds A[i, j] and
B[i, j]. Each block of A and B is needed by exactly one task, so nothing is shared.

Two volunteers' copies of a block must hold the same values (see `equivalent`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splitters import blocks
from splitters.api import Estimate, Parameter, SplitterError, TaskTemplate, same_bytes
from splitters.equivalence import same_arrays

WORKER = "matadd_block.py"
A_INPUT = "a_block.npy"
B_INPUT = "b_block.npy"
COMMAND = (
    "python3",
    f"/input/{WORKER}",
    f"/input/{A_INPUT}",
    f"/input/{B_INPUT}",
    f"/output/{blocks.BLOCK_OUTPUT}",
)


def _plan(a: blocks.Operand, b: blocks.Operand, grid: int) -> blocks.BlockWork:
    """Checks that A + B on this grid makes sense; the work of its largest task."""
    if a.shape != b.shape:
        raise SplitterError(
            "b", f"B is {b.rows}x{b.cols} but A is {a.rows}x{a.cols}: A + B needs equal shapes"
        )
    blocks.check_grid(grid, a, a)
    cells = blocks.largest(a.rows, grid) * blocks.largest(a.cols, grid)
    return blocks.BlockWork(
        input_bytes=cells * (a.dtype.itemsize + b.dtype.itemsize),
        output_bytes=cells * np.result_type(a.dtype, b.dtype).itemsize,
        flops=float(cells),
    )


class MatrixAddition:
    name = "matrix_addition"
    description = "C = A + B, one task per block of C"
    # `node init`: a generated instance that runs in seconds on two volunteers.
    example: Mapping[str, Any] = {"size": 512, "blocks": 2, "seed": 1}
    parameters: tuple[Parameter, ...] = blocks.parameters("A + B")

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        return blocks.estimate(params, _plan)

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        estimate = self.estimate(params)  # checks every parameter before anything is written
        grid: int = params["blocks"]
        a, b = blocks.arrays(params)
        worker = blocks.ship_worker(workdir, WORKER)
        tasks = []
        for i, (top, bottom) in enumerate(blocks.bounds(a.shape[0], grid)):
            for j, (left, right) in enumerate(blocks.bounds(a.shape[1], grid)):
                a_block = blocks.save(workdir / f"a_block_{i}_{j}.npy", a[top:bottom, left:right])
                b_block = blocks.save(workdir / f"b_block_{i}_{j}.npy", b[top:bottom, left:right])
                tasks.append(
                    TaskTemplate(
                        name=blocks.block_name(i, j),
                        command=COMMAND,
                        inputs={WORKER: worker, A_INPUT: a_block, B_INPUT: b_block},
                        outputs=(blocks.BLOCK_OUTPUT,),
                        resources=estimate.resources,
                        timeout_seconds=params["timeout_seconds"],
                    )
                )
        return tasks

    def equivalent(self, output: str, a: Path, b: Path) -> bool:
        """Two copies of a block agree when they hold the same array: same shape, dtype and
        values, with no tolerance. Adding two numbers is one correctly rounded IEEE
        operation, the same on every CPU and in any order of elements, so an honest sum
        has exactly one value. The bytes, though, may differ where the values do not: a
        volunteer without Docker runs its host's numpy, and numpy versions have laid
        the .npy header out differently (its padding, the data's alignment); a big-endian
        host writes >f8; and an invalid sum (inf + -inf) is a NaN whose sign bit x86 sets
        and ARM does not. So the arrays are compared, not the bytes, with NaN equal to NaN."""
        if output == blocks.BLOCK_OUTPUT:
            return same_arrays(a, b)
        return same_bytes(a, b)

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        return [blocks.assemble(outputs, workdir)]
