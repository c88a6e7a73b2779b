"""How the CLI shows numbers to people."""

from __future__ import annotations

import pytest

from cli.views import size


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (3 * 2**20 + 2**19, "3.5 MiB"),
        (5 * 2**30, "5.0 GiB"),
        (3 * 2**40, "3072.0 GiB"),
    ],
)
def test_sizes_are_shown_in_the_largest_unit_up_to_gib(count: int, shown: str) -> None:
    assert size(count) == shown
