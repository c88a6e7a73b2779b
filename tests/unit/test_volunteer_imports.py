"""What a volunteer daemon imports leaves out the packages it does not need while it waits
for work (benchmarks/idle.py: idle_rss): `cryptography` (joins and renewals run it in a child,
daemon/trust/keywork.py), aiohttp and aiodocker (imported by the first task that needs Docker,
daemon/runtime/on_demand.py; what an idle volunteer asks Docker is asked in a child,
daemon/runtime/probe.py) and sqlite-utils (the volunteer's store is plain sqlite3). Each
stays in a process for good once imported: together ~25 MiB."""

from __future__ import annotations

import subprocess
import sys

# As `node daemon --role volunteer` imports: the CLI, the node, the role (numpy is kept out
# of every daemon without the manager role, as cli/main.py does).
VOLUNTEER_IMPORTS = """
import sys
sys.modules["numpy"] = None
import cli.main, daemon.app, volunteer_node.role
heavy = ("cryptography", "aiohttp", "aiodocker", "sqlite_utils")
print(" ".join(name for name in heavy if name in sys.modules))
"""


def test_a_volunteer_imports_neither_cryptography_nor_aiohttp_nor_sqlite_utils() -> None:
    imported = subprocess.run(
        [sys.executable, "-c", VOLUNTEER_IMPORTS],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == []
