"""Worker scripts: each runs inside a task, in the generic worker image (python3 + numpy 1.24).

A script travels to the volunteer as a task input of its own name (e.g. /input/matmul_block.py),
so it is one self-contained file: it imports nothing from vcnode and no numpy 2 API.
"""
