"""One block of C = A + B, inside a task: C_block = A_block + B_block.

Usage: python3 matadd_block.py A_BLOCK.npy B_BLOCK.npy C_BLOCK.npy

Self-contained on purpose: it travels as the task input /input/matadd_block.py and runs in
vcnode/worker:1 (Debian's python3 and numpy 1.24), so it imports nothing from vcnode and no
numpy 2 API. Progress (0-100) goes to .progress beside the output, i.e. /output/.progress.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def report(output: Path, percent: int) -> None:
    (output.parent / ".progress").write_text(f"{percent}\n")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: matadd_block.py A_BLOCK.npy B_BLOCK.npy C_BLOCK.npy", file=sys.stderr)
        return 2
    a_path, b_path, c_path = (Path(arg) for arg in argv)
    report(c_path, 0)
    a = np.load(a_path, allow_pickle=False)
    b = np.load(b_path, allow_pickle=False)
    report(c_path, 40)
    if a.shape != b.shape:
        print(f"cannot add {a.shape} and {b.shape}", file=sys.stderr)
        return 1
    np.save(c_path, a + b, allow_pickle=False)
    report(c_path, 100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
