"""C = A + B, one task per block of a `blocks` x `blocks` grid: task (i, j) adds A[i, j] and
B[i, j]. Each block of A and B is needed by exactly one task, so nothing is shared."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splitters import blocks
from splitters.api import Estimate, Parameter, SplitterError, TaskTemplate

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

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        return [blocks.assemble(outputs, workdir)]
