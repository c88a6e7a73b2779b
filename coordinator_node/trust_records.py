"""How far the pool trusts each volunteer's results: a pure record of verdicts.

Managers compare copies of a task run on distinct volunteers and report, per copy, whether
it agreed with the quorum (manager_node/validation.py). Each verdict moves the volunteer's
record here; managers read it back with each completed result and decide whether that one
copy may stand alone (`TrustRecord.trusted`), as BOINC's adaptive replication does.

Rules:
- An agreement lengthens the streak; a disagreement ends it and ends a vouched start.
- `blocklist_after` disagreements among the latest `window` verdicts blocklist the
  volunteer: it is offered nothing until an admin clears its record. One bad result is a
  reset, not a sentence: faulty RAM flips a bit now and then, a cheater does it every time.
- A record is made the first time a volunteer joins, vouched or not as its certificate says;
  what its certificate says later never restores a trust that its results lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from daemon.models import TrustRecord

DEFAULT_WINDOW = 10
DEFAULT_BLOCKLIST_AFTER = 2


class TrustBook:
    def __init__(
        self, window: int = DEFAULT_WINDOW, blocklist_after: int = DEFAULT_BLOCKLIST_AFTER
    ) -> None:
        if not 1 <= blocklist_after <= window:
            raise ValueError("blocklist_after must be between 1 and the window")
        self.window = window
        self.blocklist_after = blocklist_after
        self._records: dict[str, TrustRecord] = {}

    def restore(self, records: Iterable[tuple[str, TrustRecord]]) -> None:
        self._records.update(records)

    def get(self, volunteer_id: str) -> TrustRecord:
        return self._records.get(volunteer_id, TrustRecord())

    def is_blocklisted(self, volunteer_id: str) -> bool:
        return self.get(volunteer_id).blocklisted

    def enrol(self, volunteer_id: str, vouched: bool) -> TrustRecord | None:
        """The first sight of a volunteer: returns its new record to save, or None if it
        has one already."""
        if volunteer_id in self._records:
            return None
        record = self._records[volunteer_id] = TrustRecord(vouched=vouched)
        return record

    def record(self, volunteer_id: str, agreed: bool, task_id: str, now: float) -> TrustRecord:
        """Applies one verdict; returns the record as it now stands."""
        record = self.judged(self.get(volunteer_id), agreed, task_id, now)
        self._records[volunteer_id] = record
        return record

    def set(self, volunteer_id: str, record: TrustRecord) -> None:
        """Takes a record `judged` made, once it is saved."""
        self._records[volunteer_id] = record

    def judged(self, record: TrustRecord, agreed: bool, task_id: str, now: float) -> TrustRecord:
        """`record` after one more verdict (nothing changes here)."""
        recent = (record.recent + ("a" if agreed else "d"))[-self.window :]
        if agreed:
            record = replace(
                record, agreed=record.agreed + 1, streak=record.streak + 1, recent=recent
            )
        else:
            record = replace(
                record,
                disagreed=record.disagreed + 1,
                streak=0,
                vouched=False,
                recent=recent,
                last_disagreement_at=now,
                last_disagreement_task=task_id,
            )
            bad = recent.count("d")
            if not record.blocklisted and bad >= self.blocklist_after:
                record = replace(
                    record,
                    blocklisted=True,
                    blocklist_reason=(
                        f"{bad} of its last {len(recent)} results disagreed with other "
                        f"volunteers' (the latest: task {task_id})"
                    ),
                )
        return record

    def clear(self, volunteer_id: str) -> TrustRecord:
        """An admin's fresh start: not blocklisted, no streak, not vouched; the totals stay
        (they are its history, not its standing)."""
        record = replace(
            self.get(volunteer_id),
            streak=0,
            vouched=False,
            recent="",
            blocklisted=False,
            blocklist_reason="",
        )
        self._records[volunteer_id] = record
        return record
