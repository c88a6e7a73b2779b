"""Durations on the command line (`token create --ttl`, `pause --for`, `watch`...)."""

from __future__ import annotations

import argparse

import pytest

from cli.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("1h30m", 5400),
     (" 1.5h ", 5400), ("1D", 86400)],
)  # fmt: skip
def test_a_duration_is_read_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "1w", "h", "30 m", "1h30", "90 1h", "-5m"])
def test_anything_else_is_refused_with_examples(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        parse_duration(text)
    assert str(refused.value) == (
        f"expected a duration such as 90s, 30m, 2h, 7d or 1h30m, not {text!r}"
    )


@pytest.mark.parametrize("text", ["0", "0m", "0h0m"])
def test_a_duration_of_nothing_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be longer than 0 s"):
        parse_duration(text)
