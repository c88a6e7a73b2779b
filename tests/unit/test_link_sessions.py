"""What the volunteer queues for its coordinator is taken off the queue only for a stream
that is still open. grpc goes on pulling from a session's sender after the stream ended and
drops what it gets: the first word queued after a coordinator went away (that a task
started, said again on reconnecting) was lost that way, for good."""

from __future__ import annotations

import asyncio

from daemon.models import Load, OwnerLimits, Registration
from daemon.rpc.v1 import coordinator_pb2
from daemon.trust.credentials import LiveCredential
from tests.trust import credential
from volunteer_node.link import CoordinatorLink

REGISTER = coordinator_pb2.VolunteerMessage(register=coordinator_pb2.Register(volunteer_id="v1"))


async def no_registration() -> Registration:
    raise AssertionError("not used")


def link() -> CoordinatorLink:
    return CoordinatorLink(
        explicit_address="127.0.0.1:9",
        directory=None,
        credential=LiveCredential(credential(["volunteer"])),
        registration=no_registration,
        load=Load,
        handler=None,  # type: ignore[arg-type]
        heartbeat_seconds=5,
    )


async def test_a_message_queued_after_a_stream_ended_goes_on_the_next_session() -> None:
    coordinator = link()
    ended = False
    old = coordinator._drain(REGISTER, lambda: ended)
    assert await anext(old) == REGISTER
    # grpc asks the sender for the next message, and it waits for one.
    waiting = asyncio.ensure_future(anext(old))
    await asyncio.sleep(0)
    assert not waiting.done()
    ended = True  # the coordinator went away meanwhile
    coordinator.send_started("wf.t", 1)
    try:
        taken = await waiting
    except StopAsyncIteration:
        taken = None
    assert taken is None, "the ended session took the message, and grpc would drop it"
    new = coordinator._drain(REGISTER, lambda: False)
    assert await anext(new) == REGISTER
    sent = await anext(new)
    assert (sent.started.task_id, sent.started.attempt) == ("wf.t", 1)


async def test_an_open_session_sends_what_is_queued_in_order() -> None:
    coordinator = link()
    sender = coordinator._drain(REGISTER, lambda: False)
    assert await anext(sender) == REGISTER
    coordinator.send_accept("wf.a", 1)
    coordinator.send_started("wf.a", 1)
    assert (await anext(sender)).WhichOneof("kind") == "accept"
    assert (await anext(sender)).WhichOneof("kind") == "started"


async def test_heartbeats_queued_with_no_session_open_are_dropped_as_the_next_one_opens() -> None:
    """They hold a stale load, and limits the owner may have changed back since: a
    coordinator taking them after the registration would keep the wrong ones."""
    limits = OwnerLimits(max_concurrent_tasks=3)
    coordinator = CoordinatorLink(
        explicit_address="127.0.0.1:9",
        directory=None,
        credential=LiveCredential(credential(["volunteer"])),
        registration=no_registration,
        load=Load,
        handler=None,  # type: ignore[arg-type]
        heartbeat_seconds=5,
        limits=lambda: limits,
    )
    coordinator._registered_limits = OwnerLimits(max_concurrent_tasks=1)
    coordinator.send_heartbeat()  # offline, carrying 3 slots
    coordinator.send_started("wf.t", 1)
    limits = OwnerLimits(max_concurrent_tasks=1)
    coordinator.send_heartbeat()
    sender = coordinator._drain(REGISTER, lambda: False)
    assert await anext(sender) == REGISTER
    sent = await anext(sender)
    assert sent.WhichOneof("kind") == "started", "what matters still goes"
    assert not coordinator._outgoing, "no stale heartbeat left to send"
