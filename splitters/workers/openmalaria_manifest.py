"""The `manifest` task of an openmalaria sweep: hands the sweep's runs.json back as an output.

Usage: python3 openmalaria_manifest.py RUNS_JSON_IN RUNS_JSON_OUT

Merge sees only the tasks' outputs, and the OpenMalaria runs write nothing but output.txt:
which sweep point and seed each run had is in runs.json, which split wrote. This task copies
it from /input to /output, so merge gets it like any result, with no help from the user's
image. It runs in vcnode/worker:1; self-contained and stdlib-only on purpose. Progress goes
to .progress beside the output, i.e. /output/.progress.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: openmalaria_manifest.py RUNS_JSON_IN RUNS_JSON_OUT", file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    data = source.read_bytes()
    try:
        json.loads(data)
    except ValueError as error:  # a corrupted transfer should fail here, not in merge
        print(f"{source} is not JSON: {error}", file=sys.stderr)
        return 1
    target.write_bytes(data)
    (target.parent / ".progress").write_text("100\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
