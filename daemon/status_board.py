"""What a node's roles tell its owner about themselves, for `vcnode status` on that machine
(NodeService.GetInfo): roles write it as things happen, the node service reads it."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.models import TrustRecord


@dataclass
class StatusBoard:
    # The coordinator a volunteer is in session with now; "" when none.
    coordinator: str = ""
    # How that coordinator trusts this volunteer's results, as it last said; None before
    # any coordinator said anything.
    trust: TrustRecord | None = None
