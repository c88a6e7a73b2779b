"""The validation state machine: quorum, adaptive trust, spot checks, late copies, no quorum."""

from __future__ import annotations

from daemon.models import TaskResult
from manager_node.validation import (
    Copy,
    CopyState,
    Decision,
    Validation,
    Verdict,
    copy_id,
    task_of,
)
from workflows.validation_policy import Mode, ValidationPolicy

QUORUM = ValidationPolicy(mode=Mode.QUORUM, replicas=2, quorum=2, max_copies=4)
ADAPTIVE = ValidationPolicy(mode=Mode.ADAPTIVE, quorum=2, max_copies=4)


def result(number: int, attempt: int = 1, error: str = "") -> TaskResult:
    return TaskResult(copy_id("t", number), attempt, 0 if not error else 1, error, (), 10, 12)


def complete(
    v: Validation, number: int, answer: int, trusted: bool = False, spot: bool = False
) -> Decision:
    v.fetching(number, f"vol-{number}", 1)
    v.running(number, f"vol-{number}", 1)
    return v.completed(number, f"vol-{number}", result(number), answer, trusted, spot)


def test_copy_ids_round_trip_and_the_first_copy_is_the_task_itself() -> None:
    assert copy_id("wf.a", 1) == "wf.a"
    assert task_of("wf.a") == ("wf.a", 1)
    assert copy_id("wf.a", 3) == "wf.a~3"
    assert task_of("wf.a~3") == ("wf.a", 3)
    assert task_of("wf.a~x") == ("wf.a~x", 1)


def test_quorum_starts_replicas_at_once_and_accepts_when_two_agree() -> None:
    v = Validation("t", QUORUM)
    assert v.start().submit == (1, 2)
    assert complete(v, 1, answer=0).accept is None
    decision = complete(v, 2, answer=0)
    assert decision.accept is not None
    assert decision.accept.number == 1
    assert [c.verdict for c in decision.judged] == [Verdict.AGREED, Verdict.AGREED]
    assert v.outcome == "2 of 2 copies agreed"


def test_a_disagreement_spawns_a_copy_that_settles_it_and_the_odd_one_is_judged() -> None:
    v = Validation("t", QUORUM)
    v.start()
    complete(v, 1, answer=0)
    decision = complete(v, 2, answer=1)  # the corrupt one
    assert decision.submit == (3,)
    assert decision.accept is None
    decision = complete(v, 3, answer=0)
    assert decision.accept is not None
    assert decision.accept.number == 1
    verdicts = {c.number: c.verdict for c in decision.judged}
    assert verdicts == {1: Verdict.AGREED, 2: Verdict.DISAGREED, 3: Verdict.AGREED}


def test_no_quorum_after_max_copies_fails_with_the_answers() -> None:
    v = Validation("t", QUORUM)
    v.start()
    complete(v, 1, answer=0)
    complete(v, 2, answer=1)
    complete(v, 3, answer=2)
    decision = complete(v, 4, answer=3)
    assert decision.fail.startswith("no quorum: 2 agreeing copies needed, 4 ran")
    assert "answer 1: 1 copy (vol-1)" in decision.fail
    assert "answer 4" in decision.fail
    assert v.failed
    assert not decision.submit


def test_adaptive_lets_a_trusted_volunteers_copy_stand_alone() -> None:
    v = Validation("t", ADAPTIVE)
    assert v.start().submit == (1,)
    decision = complete(v, 1, answer=0, trusted=True, spot=False)
    assert decision.accept is not None
    assert [c.verdict for c in decision.judged] == [Verdict.UNCHECKED]
    assert v.copies[0].verdict is Verdict.UNCHECKED
    assert v.outcome == "its volunteer is trusted"


def test_adaptive_checks_an_untrusted_volunteer_and_a_spot_checked_trusted_one() -> None:
    for trusted, spot in ((False, False), (True, True)):
        v = Validation("t", ADAPTIVE)
        v.start()
        decision = complete(v, 1, answer=0, trusted=trusted, spot=spot)
        assert decision.submit == (2,)
        assert decision.accept is None
        assert v.avoided() == ("vol-1",)
        decision = complete(v, 2, answer=0)
        assert decision.accept is not None
        assert len(decision.judged) == 2


def test_adaptive_accepts_unverified_when_no_distinct_volunteer_can_check() -> None:
    v = Validation("t", ADAPTIVE)
    v.start()
    complete(v, 1, answer=0)
    decision = v.unschedulable(2)
    assert decision.accept is not None
    assert decision.accept.number == 1
    assert decision.cancel == (2,)
    assert v.copies[1].state is CopyState.CANCELLED
    assert v.outcome.startswith("unverified")


def test_quorum_waits_when_a_copy_is_unschedulable() -> None:
    v = Validation("t", QUORUM)
    v.start()
    complete(v, 1, answer=0)
    assert v.unschedulable(2).accept is None
    assert not v.decided


def test_a_copy_after_the_quorum_is_judged_never_taken() -> None:
    v = Validation("t", ValidationPolicy(mode=Mode.QUORUM, replicas=3, quorum=2))
    v.start()
    complete(v, 1, answer=0)
    complete(v, 2, answer=0)
    late = complete(v, 3, answer=1)
    assert late.accept is None
    assert [c.number for c in late.judged] == [3]
    assert v.copies[2].verdict is Verdict.DISAGREED
    assert v.accepted == 1


def test_a_lone_failed_copy_fails_the_task_with_its_error() -> None:
    v = Validation("t", ADAPTIVE)
    v.start()
    assert v.failed_copy(1, result(1, error="exit 3"), "exit 3").fail == "exit 3"


def test_a_failed_check_copy_is_replaced_until_max_copies() -> None:
    v = Validation("t", ADAPTIVE)
    v.start()
    complete(v, 1, answer=0)
    assert v.failed_copy(2, None, "lost").submit == (3,)
    assert v.failed_copy(3, None, "lost").submit == (4,)
    decision = v.failed_copy(4, None, "lost")
    assert decision.fail.startswith("no quorum")
    assert "3 failed" in decision.fail


def test_quorum_with_one_failed_copy_waits_for_the_other_then_spawns_one() -> None:
    v = Validation("t", QUORUM)
    v.start()
    assert v.failed_copy(1, None, "oom") == Decision()  # copy 2 may still answer
    assert complete(v, 2, answer=0).submit == (3,)


def test_run_seconds_and_extra_copies_count_the_cost() -> None:
    v = Validation("t", QUORUM)
    v.start()
    complete(v, 1, answer=0)
    complete(v, 2, answer=0)
    assert v.extra_copies == 1
    assert v.copies[1].run_seconds == 2.0
    assert Copy(5).run_seconds == 0.0


def test_policy_problems_name_the_key() -> None:
    assert ValidationPolicy().problems() == []
    keys = {
        key
        for key, _ in ValidationPolicy(
            mode=Mode.QUORUM, quorum=3, replicas=2, spot_check_rate=1.5
        ).problems()
    }
    assert keys == {"replicas", "spot_check_rate"}
    assert [k for k, _ in ValidationPolicy(quorum=1).problems()] == ["quorum"]


def test_a_second_answer_from_one_volunteer_never_counts_toward_the_quorum() -> None:
    v = Validation("t", QUORUM)
    v.start()
    v.completed(1, "cheat", result(1), 0, trusted=False, spot_check=False)
    decision = v.completed(2, "cheat", result(2), 0, trusted=False, spot_check=False)
    assert decision.accept is None
    assert decision.submit == (3,)
    assert v.copies[1].state is CopyState.FAILED


def test_only_a_volunteer_on_probation_hears_of_an_unchecked_result() -> None:
    from manager_node.manager import _verdicts
    from manager_node.workflow import WorkflowTask

    copies = [
        Copy(1, CopyState.COMPLETED, "trusted", 1, result(1), 0, Verdict.UNCHECKED),
        Copy(2, CopyState.COMPLETED, "newcomer", 1, result(2), 0, Verdict.UNCHECKED),
        Copy(3, CopyState.COMPLETED, "checked", 1, result(3), 0, Verdict.AGREED),
        Copy(4, CopyState.RUNNING, "late", 1),
    ]
    copies[1].probation = True
    task = WorkflowTask("t", "t", validation=Validation("t", ADAPTIVE, copies))
    said = {(v.volunteer_id, v.checked) for v in _verdicts(task, copies)}
    assert said == {("newcomer", False), ("checked", True)}


def test_an_unchecked_answer_is_checked_after_all_when_reopened() -> None:
    v = Validation("t", ADAPTIVE)
    v.start()
    complete(v, 1, answer=0, trusted=True, spot=False)
    assert v.accepted == 1
    decision = v.reopen()
    assert decision.submit == (2,)
    assert (v.accepted, v.copies[0].verdict) == (0, Verdict.PENDING)
    forged_caught = complete(v, 2, answer=1)  # the check disagrees with it
    assert forged_caught.submit == (3,)
    settled = complete(v, 3, answer=1)
    assert settled.accept is not None
    assert settled.accept.number == 2
    assert {c.number: c.verdict for c in settled.judged}[1] is Verdict.DISAGREED


def test_a_checked_answer_is_not_reopened() -> None:
    v = Validation("t", QUORUM)
    v.start()
    complete(v, 1, answer=0)
    complete(v, 2, answer=0)
    assert v.reopen() == Decision()
    assert v.accepted == 1


def test_adaptive_fails_a_disagreement_nobody_is_left_to_settle_and_says_why() -> None:
    v = Validation("t", ADAPTIVE)
    v.start()
    complete(v, 1, answer=0, trusted=True, spot=True)
    assert complete(v, 2, answer=1).submit == (3,)  # a third copy would settle it ...
    decision = v.unschedulable(3)  # ... but no other volunteer can run it
    assert decision.cancel == (3,)
    assert decision.fail.startswith("no quorum: 2 agreeing copies needed, 2 ran")
    assert 'give it validation = "none"' in decision.fail
    assert v.failed


def test_a_copy_fetching_is_held_by_its_volunteer_and_goes_back_when_handed_back() -> None:
    v = Validation("t", QUORUM)
    v.start()
    v.fetching(1, "vol-1", 1)
    copy = v.copy(1)
    assert copy is not None
    assert (copy.state, copy.volunteer_id, copy.attempt) == (CopyState.FETCHING, "vol-1", 1)
    assert copy.state.live
    assert copy.state.held
    assert v.avoided() == ("vol-1",), "a copy there already: the next goes elsewhere"
    v.handed_back(1)  # its volunteer was lost before the copy started
    assert copy.state is CopyState.QUEUED
    assert not copy.state.held
    v.fetching(1, "vol-3", 2)
    v.running(1, "vol-3", 2)
    assert (copy.state, copy.volunteer_id, copy.attempt) == (CopyState.RUNNING, "vol-3", 2)


def test_a_copy_cancelled_while_fetching_ends_and_a_fetching_copy_can_still_fail() -> None:
    v = Validation("t", QUORUM)
    v.start()
    v.fetching(1, "vol-1", 1)
    v.cancelled(1)
    assert v.copies[0].state is CopyState.CANCELLED
    v.fetching(1, "late", 1)
    assert v.copies[0].state is CopyState.CANCELLED, "an ended copy stays ended"
    v.fetching(2, "vol-2", 1)
    decision = v.failed_copy(2, None, "could not fetch input a.bin")
    assert v.copies[1].state is CopyState.FAILED
    assert decision.fail == "could not fetch input a.bin", "no copy left live"
