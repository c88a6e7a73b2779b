from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Daemons


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    group = Daemons(tmp_path)
    yield group
    group.stop_all()
