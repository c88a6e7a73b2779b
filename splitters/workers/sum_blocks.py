"""The reduce stage of a k-split C = A·B, inside a task: C_block = sum of the partial
products A_ik · B_kj over k.

Usage: python3 sum_blocks.py C_BLOCK.npy PARTIAL.npy [PARTIAL.npy ...]

Self-contained on purpose: it travels as the task input /input/sum_blocks.py and runs in
vcnode/worker:1 (Debian's python3 and numpy 1.24), so it imports nothing from vcnode and no
numpy 2 API. Partials are added one at a time, so memory holds the sum and one partial.
Progress (0-100) goes to .progress beside the output, i.e. /output/.progress.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402


def report(output: Path, percent: int) -> None:
    (output.parent / ".progress").write_text(f"{percent}\n")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: sum_blocks.py C_BLOCK.npy PARTIAL.npy [PARTIAL.npy ...]", file=sys.stderr)
        return 2
    c_path, partials = Path(argv[0]), [Path(arg) for arg in argv[1:]]
    report(c_path, 0)
    total = np.array(np.load(partials[0], allow_pickle=False))
    for index, path in enumerate(partials[1:], start=1):
        partial = np.load(path, allow_pickle=False)
        if partial.shape != total.shape:
            print(f"{path.name} is {partial.shape}, the others {total.shape}", file=sys.stderr)
            return 1
        total = total + partial
        report(c_path, 90 * (index + 1) // len(partials))
    np.save(c_path, total, allow_pickle=False)
    report(c_path, 100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
