"""A result the coordinator's edge would refuse is reported as a failure saying why: sent
as it is, it would be refused in every session, and re-sent for ever."""

from __future__ import annotations

from daemon.models import FileRef, Load, Registration, TaskResult
from daemon.transport.caps import DEFAULT_ITEMS
from daemon.trust.credentials import LiveCredential
from tests.trust import credential
from volunteer_node.link import CoordinatorLink


async def no_registration() -> Registration:
    raise AssertionError("not used")


def test_a_result_over_the_edge_caps_is_sent_as_a_failure_naming_the_cap() -> None:
    link = CoordinatorLink(
        explicit_address="127.0.0.1:9",
        directory=None,
        credential=LiveCredential(credential(["volunteer"])),
        registration=no_registration,
        load=Load,
        handler=None,  # type: ignore[arg-type]
        heartbeat_seconds=5,
    )
    many = tuple(FileRef(f"f{i}", "0" * 64, 1) for i in range(DEFAULT_ITEMS + 1))
    link.send_result(TaskResult("wf.t", 1, 0, "", outputs=many))
    sent = link._outgoing.popleft().result
    assert sent.error == (
        "its result is too large to report: TaskResult.outputs holds 10,001 entries; at most 10,000"
    )
    assert (sent.exit_code, list(sent.outputs)) == (-1, [])
