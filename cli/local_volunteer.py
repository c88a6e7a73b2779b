"""Finds the data dir of the volunteer on this machine, for the owner's commands (`pause`,
`resume`, `drain`, `history`) given no --data-dir."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.config import default_data_dir


def volunteer_data_dir(marker: str) -> Path:
    """The first of the default data dir and an installed service's (`vcnode service
    install`: system, then user) that holds `marker` (a file the volunteer keeps there), or
    that this user may not look into (the error met there says to use sudo, rather than
    that no volunteer runs); the default data dir when none does."""
    from cli.service import installed_data_dir, layout

    candidates = [default_data_dir()]
    for user in (False, True):
        candidates.append(installed_data_dir(layout(user, None, os.environ)))
    for candidate in candidates:
        try:
            os.lstat(candidate / marker)
        except PermissionError:
            return candidate
        except OSError:
            continue
        return candidate
    return candidates[0]
