"""How the CLI shows numbers to people, and JSON to scripts."""

from __future__ import annotations

import pytest

from cli.views import print_json, size


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


def test_json_is_indented_with_sorted_keys_and_ends_with_a_newline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_json({"b": 1, "a": [2]})
    assert capsys.readouterr().out == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
