"""The trust record rules: streaks, vouched starts, blocklisting on repeated disagreement."""

from __future__ import annotations

import pytest

from coordinator_node.trust_records import TrustBook


def test_agreements_build_a_streak_that_one_disagreement_ends() -> None:
    book = TrustBook()
    book.enrol("v", vouched=False)
    for n in range(3):
        book.record("v", True, f"t{n}", now=n)
    assert book.get("v").streak == 3
    assert book.get("v").trusted(3)
    record = book.record("v", False, "bad", now=10)
    assert (record.streak, record.agreed, record.disagreed) == (0, 3, 1)
    assert (record.last_disagreement_task, record.last_disagreement_at) == ("bad", 10)
    assert not record.trusted(3)
    assert not record.blocklisted


def test_a_vouched_volunteer_is_trusted_until_its_first_disagreement() -> None:
    book = TrustBook()
    assert book.enrol("lab", vouched=True) is not None
    assert book.get("lab").trusted(threshold=10)
    assert not book.record("lab", False, "t", now=1).trusted(threshold=10)


def test_enrolling_again_never_restores_a_lost_vouched_start() -> None:
    book = TrustBook()
    book.enrol("lab", vouched=True)
    book.record("lab", False, "t", now=1)
    assert book.enrol("lab", vouched=True) is None
    assert not book.get("lab").vouched


def test_repeated_disagreements_in_the_window_blocklist_with_a_reason() -> None:
    book = TrustBook(window=10, blocklist_after=2)
    book.enrol("cheat", vouched=False)
    assert not book.record("cheat", False, "t1", now=1).blocklisted
    record = book.record("cheat", False, "t2", now=2)
    assert record.blocklisted
    assert not record.trusted(0)
    assert "2 of its last 2 results disagreed" in record.blocklist_reason
    assert "t2" in record.blocklist_reason


def test_disagreements_far_apart_do_not_blocklist() -> None:
    book = TrustBook(window=5, blocklist_after=2)
    book.record("flaky", False, "t0", now=0)
    for n in range(5):
        book.record("flaky", True, f"ok{n}", now=n + 1)
    assert not book.record("flaky", False, "t9", now=9).blocklisted


def test_clearing_lifts_the_blocklist_and_keeps_the_totals() -> None:
    book = TrustBook(blocklist_after=1)
    book.record("v", True, "a", now=0)
    book.record("v", False, "b", now=1)
    assert book.is_blocklisted("v")
    record = book.clear("v")
    assert not record.blocklisted
    assert record.recent == ""
    assert record.streak == 0
    assert (record.agreed, record.disagreed) == (1, 1)


def test_a_blocklist_rule_outside_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="between 1 and the window"):
        TrustBook(window=3, blocklist_after=4)
