"""Task event kinds on the wire: every kind round-trips, and one this version does not know
is refused (the manager then logs and skips it) rather than read as something else."""

from __future__ import annotations

import pytest

from daemon.models import EventKind, TaskEvent
from daemon.rpc.v1 import coordinator_pb2
from daemon.transport import convert


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_event_kind_round_trips(kind: EventKind) -> None:
    event = TaskEvent("wf.t", "wf", kind, at=1.0)
    assert convert.task_event_from_proto(convert.task_event_to_proto(event)) == event


def test_an_unknown_event_kind_is_refused() -> None:
    message = coordinator_pb2.TaskEvent(task_id="wf.t", workflow_id="wf", kind="teleported")
    with pytest.raises(ValueError, match="teleported"):
        convert.task_event_from_proto(message)
