"""One block of C = A·B, inside a task: C_block = A_panel · B_panel.

Usage: python3 matmul_block.py A_PANEL.npy B_PANEL.npy C_BLOCK.npy

Self-contained on purpose: it travels as the task input /input/matmul_block.py and runs in
vcnode/worker:1 (Debian's python3 and numpy 1.24), so it imports nothing from vcnode and no
numpy 2 API. Progress (0-100) goes to .progress beside the output, i.e. /output/.progress.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The task asks for one CPU: a BLAS spawning a thread per host core would only contend
# (and, under the process runtime, reserve address space per thread). Set before numpy loads.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

# Products are computed in this many row strips, so progress moves during the arithmetic.
STRIPS = 10


def report(output: Path, percent: int) -> None:
    (output.parent / ".progress").write_text(f"{percent}\n")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: matmul_block.py A_PANEL.npy B_PANEL.npy C_BLOCK.npy", file=sys.stderr)
        return 2
    a_path, b_path, c_path = (Path(arg) for arg in argv)
    report(c_path, 0)
    a = np.load(a_path, allow_pickle=False)
    b = np.load(b_path, allow_pickle=False)
    report(c_path, 10)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        print(f"cannot multiply {a.shape} by {b.shape}", file=sys.stderr)
        return 1
    c = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a.dtype, b.dtype))
    strips = max(1, min(STRIPS, a.shape[0]))
    edges = np.linspace(0, a.shape[0], strips + 1).astype(int)
    for index in range(strips):
        top, bottom = int(edges[index]), int(edges[index + 1])
        np.matmul(a[top:bottom], b, out=c[top:bottom])
        report(c_path, 10 + 80 * (index + 1) // strips)
    np.save(c_path, c, allow_pickle=False)
    report(c_path, 100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
