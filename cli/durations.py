"""Durations as people type them on the command line: `90`, `90s`, `30m`, `24h`, `7d`, or
combined, `1h30m`."""

from __future__ import annotations

import argparse
import re

_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds; an argparse type (its error is what the user sees)."""
    cleaned = text.strip().lower()
    parts = _PART.findall(cleaned)
    bare = [number for number, unit in parts if not unit]
    if not parts or "".join(n + u for n, u in parts) != cleaned or (bare and len(parts) > 1):
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 30m, 2h, 7d or 1h30m, not {text!r}"
        )
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        # 0 on the wire means "none given": a duration of nothing must not mean the default.
        raise argparse.ArgumentTypeError(f"a duration must be longer than 0 s, not {text!r}")
    return seconds
