"""What the manager tells its clients survives the wire: each dataclass converted to its
protobuf message and back is the same object, and the coordinator's session messages carry
what they were given."""

from __future__ import annotations

from daemon.models import (
    FileRef,
    ResourceRequest,
    Submitted,
    TaskSpec,
    TaskStatusRow,
    WorkflowCounts,
    WorkflowStatus,
    WorkflowUpdate,
)
from daemon.transport import convert

COUNTS = WorkflowCounts(queued=3, running=2, completed=5, failed=1, cancelled=1, total=12)


def test_counts_round_trip() -> None:
    assert convert.workflow_counts_from_proto(convert.workflow_counts_to_proto(COUNTS)) == COUNTS


def test_a_task_row_round_trips() -> None:
    row = TaskStatusRow(
        task_id="wf.b",
        name="b",
        state="failed",
        attempts=3,
        error="exit code 2",
        volunteer_id="c0ffee00-volunteer",
    )
    assert convert.task_status_row_from_proto(convert.task_status_row_to_proto(row)) == row


def test_a_workflow_with_tasks_and_counts_round_trips() -> None:
    status = WorkflowStatus(
        workflow_id="wf",
        name="sweep",
        type="parameter_sweep",
        state="failed",
        created_at=1_760_000_000.125,
        updated_at=1_760_000_042.5,
        counts=WorkflowCounts(completed=1, failed=2, total=3),
        tasks=(
            TaskStatusRow("wf.a", "a", "completed", attempts=1, volunteer_id="v1"),
            TaskStatusRow("wf.b", "b", "failed", attempts=2, error="out of memory"),
            TaskStatusRow("wf.c", "c", "skipped", error="skipped: b did not complete"),
        ),
        error="merge: no results",
    )
    assert convert.workflow_status_from_proto(convert.workflow_status_to_proto(status)) == status


def test_an_empty_workflow_round_trips() -> None:
    status = WorkflowStatus("wf", "empty", "tasks", "queued", created_at=1.0, updated_at=1.0)
    assert convert.workflow_status_from_proto(convert.workflow_status_to_proto(status)) == status


def test_updates_round_trip() -> None:
    for update in (
        WorkflowUpdate("wf", "", "status", "", at=12.25, counts=COUNTS),
        WorkflowUpdate("wf", "wf.b", "failed", "exit code 2", at=13.5, counts=COUNTS),
    ):
        assert (
            convert.workflow_update_from_proto(convert.workflow_update_to_proto(update)) == update
        )


def test_a_submission_round_trips() -> None:
    for submitted in (Submitted("wf", 12, estimated_seconds_per_task=2.5), Submitted("wf", 0)):
        assert convert.submitted_from_proto(convert.submitted_to_proto(submitted)) == submitted


def test_an_inline_file_round_trips() -> None:
    ref = FileRef("input.txt", "ab" * 32, 5)
    assert convert.inline_file_from_proto(convert.inline_file_to_proto(ref, b"hello")) == (
        ref,
        b"hello",
    )


def test_session_messages_carry_what_they_were_given() -> None:
    spec = TaskSpec("wf.a", "wf", "vcnode/worker:1", ("python3", "-c", "1"), ResourceRequest(), 60)
    offer = convert.offer_to_proto(spec)
    assert offer.WhichOneof("kind") == "offer"
    assert convert.task_spec_from_proto(offer.offer.task) == spec

    cancel = convert.cancel_to_proto("wf.a", "cancelled by the user")
    assert cancel.WhichOneof("kind") == "cancel"
    assert (cancel.cancel.task_id, cancel.cancel.reason) == ("wf.a", "cancelled by the user")

    ack = convert.result_ack_to_proto("wf.a", 2)
    assert ack.WhichOneof("kind") == "result_ack"
    assert (ack.result_ack.task_id, ack.result_ack.attempt) == ("wf.a", 2)
