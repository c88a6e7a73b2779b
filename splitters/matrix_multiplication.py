"""C = A·B with a 2-D block decomposition: task (i, j) computes C[i, j] = A_i · B_j.

A_i is row panel i of A (its rows of block row i, every column) and B_j is column panel j of
B (every row, its columns of block column j). Each panel is written once and shared by the
`blocks` tasks that need it, so the same file (and content hash) serves them all and the
volunteers' caches and transfers dedupe it. A grid of g x g tasks moves 2g panels, each
task reading one A panel and one B panel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from splitters import blocks
from splitters.api import Estimate, Parameter, SplitterError, TaskTemplate

WORKER = "matmul_block.py"
A_INPUT = "a_panel.npy"
B_INPUT = "b_panel.npy"
COMMAND = (
    "python3",
    f"/input/{WORKER}",
    f"/input/{A_INPUT}",
    f"/input/{B_INPUT}",
    f"/output/{blocks.BLOCK_OUTPUT}",
)


def _plan(a: blocks.Operand, b: blocks.Operand, grid: int) -> blocks.BlockWork:
    """Checks that A·B on this grid makes sense; the work of its largest task."""
    if a.cols != b.rows:
        raise SplitterError(
            "b",
            f"B is {b.rows}x{b.cols} but A is {a.rows}x{a.cols}:"
            f" A·B needs B to have {a.cols} rows (A's columns)",
        )
    blocks.check_grid(grid, a, b)
    # The first row and column blocks are the largest when sizes do not divide evenly.
    rows = blocks.largest(a.rows, grid)
    cols = blocks.largest(b.cols, grid)
    inner = a.cols
    return blocks.BlockWork(
        input_bytes=rows * inner * a.dtype.itemsize + inner * cols * b.dtype.itemsize,
        output_bytes=rows * cols * np.result_type(a.dtype, b.dtype).itemsize,
        flops=2.0 * rows * inner * cols,
    )


class MatrixMultiplication:
    name = "matrix_multiplication"
    description = "C = A·B, one task per block of C (row panel of A times column panel of B)"
    # `node init`: a generated instance that runs in seconds on two volunteers.
    example: Mapping[str, Any] = {"size": 512, "blocks": 2, "seed": 1}
    parameters: tuple[Parameter, ...] = blocks.parameters("A·B")

    def estimate(self, params: Mapping[str, Any]) -> Estimate:
        return blocks.estimate(params, _plan)

    def split(self, params: Mapping[str, Any], workdir: Path) -> list[TaskTemplate]:
        estimate = self.estimate(params)  # checks every parameter before anything is written
        grid: int = params["blocks"]
        a, b = blocks.arrays(params)
        worker = blocks.ship_worker(workdir, WORKER)
        row_bounds = blocks.bounds(a.shape[0], grid)
        col_bounds = blocks.bounds(b.shape[1], grid)
        a_panels = [
            blocks.save(workdir / f"a_panel_{i}.npy", a[start:stop, :])
            for i, (start, stop) in enumerate(row_bounds)
        ]
        b_panels = [
            blocks.save(workdir / f"b_panel_{j}.npy", b[:, start:stop])
            for j, (start, stop) in enumerate(col_bounds)
        ]
        return [
            TaskTemplate(
                name=blocks.block_name(i, j),
                command=COMMAND,
                inputs={WORKER: worker, A_INPUT: a_panel, B_INPUT: b_panel},
                outputs=(blocks.BLOCK_OUTPUT,),
                resources=estimate.resources,
                timeout_seconds=params["timeout_seconds"],
            )
            for i, a_panel in enumerate(a_panels)
            for j, b_panel in enumerate(b_panels)
        ]

    def merge(self, outputs: Mapping[str, Mapping[str, Path]], workdir: Path) -> list[Path]:
        return [blocks.assemble(outputs, workdir)]
