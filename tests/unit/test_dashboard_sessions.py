"""Dashboard sessions, login codes, live event fan-out and dispatch timing: the pure parts."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import sys
import time
from pathlib import Path

import pytest

from coordinator_node.dashboard import DispatchClock
from daemon.log_format import JsonLogFormatter
from daemon.models import EventKind, TaskEvent
from daemon.transport.access import Caller
from daemon.trust.pki import Identity
from daemon.web.sessions import (
    DASHBOARD,
    LOGIN_CODE_SECONDS,
    MAX_CODES_PER_PERSON,
    MAX_PENDING_CODES,
    METRICS,
    SESSION_SECONDS,
    DashboardDoor,
    LoginCodes,
    SessionSigner,
    Viewer,
)
from daemon.web.site import MAX_QUEUED_EVENTS, EventHub, LiveEvent

ALICE = Identity("a" * 32, frozenset({"user"}), user="alice")
NOW = 1_000_000.0


def _viewer(identity: Identity = ALICE, expires_at: float = NOW + 60) -> Viewer:
    return Viewer(identity, is_self=False, expires_at=expires_at)


def test_a_signed_session_names_its_holder_until_it_expires() -> None:
    signer = SessionSigner(b"k" * 32)
    token = signer.issue(_viewer())
    viewer = signer.check(token, now=NOW)
    assert viewer is not None
    assert viewer.identity.user == "alice"
    assert viewer.identity.roles == frozenset({"user"})
    assert signer.check(token, now=NOW + 61) is None


def test_a_session_signed_with_another_key_or_altered_is_refused() -> None:
    token = SessionSigner(b"k" * 32).issue(_viewer())
    assert SessionSigner(b"x" * 32).check(token, now=NOW) is None
    body, mac = token.split(".")
    admin = SessionSigner(b"k" * 32)
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    assert admin.check(f"{forged_body}.{mac}", now=NOW) is None
    for junk in ("", ".", "a.b.c", "%%%.%%%", "x" * 5000):
        assert admin.check(junk, now=NOW) is None


def test_the_session_key_is_made_once_and_readable_by_the_owner_only(tmp_path: Path) -> None:
    first = SessionSigner.for_data_dir(tmp_path)
    mode = stat.S_IMODE((tmp_path / "dashboard.key").stat().st_mode)
    assert mode == 0o600
    token = first.issue(_viewer())
    # After a restart the same key checks the same sessions.
    assert SessionSigner.for_data_dir(tmp_path).check(token, now=NOW) is not None


def test_a_login_code_works_once_and_only_for_two_minutes() -> None:
    codes = LoginCodes()
    code = codes.issue(_viewer(), now=NOW)
    assert codes.redeem(code, now=NOW + 1) is not None
    assert codes.redeem(code, now=NOW + 2) is None
    late = codes.issue(_viewer(), now=NOW)
    assert codes.redeem(late, now=NOW + LOGIN_CODE_SECONDS + 1) is None
    assert codes.redeem("not-a-code", now=NOW) is None


def test_unused_login_codes_cannot_grow_without_bound_nor_push_out_other_peoples() -> None:
    codes = LoginCodes()
    bob = Identity("b" * 32, frozenset({"user"}), user="bob")
    bobs = codes.issue(_viewer(bob), now=NOW)
    alices = [codes.issue(_viewer(), now=NOW + n * 0.001) for n in range(50)]
    # Alice asking again and again pushes out only her own oldest codes.
    assert len(codes) == 1 + MAX_CODES_PER_PERSON
    assert codes.redeem(alices[0], now=NOW + 1) is None
    assert codes.redeem(alices[-1], now=NOW + 1) is not None
    assert codes.redeem(bobs, now=NOW + 1) is not None
    # Many people at once: the oldest code of all goes.
    people = [Identity(f"{n:032x}", frozenset({"user"}), user=f"u{n}") for n in range(300)]
    for n, person in enumerate(people):
        codes.issue(_viewer(person), now=NOW + 2 + n * 0.001)
    assert len(codes) == MAX_PENDING_CODES


def test_the_door_gives_a_link_for_people_and_a_metrics_only_token_for_scrapers() -> None:
    signer = SessionSigner(b"k" * 32)
    door = DashboardDoor(signer, LoginCodes(), "0.0.0.0")
    with pytest.raises(ValueError, match="not listening yet"):
        door.open(Caller(ALICE))
    door.port = 7480
    link = door.open(Caller(ALICE, is_self=True))
    assert link.login_path.startswith("/login?code=")
    assert (link.host, link.port, link.scrape_token) == ("0.0.0.0", 7480, "")
    viewer = door.codes.redeem(link.login_path.removeprefix("/login?code="))
    assert viewer is not None
    assert (viewer.scope, viewer.is_self) == (DASHBOARD, True)
    scrape = door.open(Caller(ALICE, is_self=True), scrape_token=True)
    scraper = signer.check(scrape.scrape_token)
    assert scraper is not None
    assert scraper.identity.user == "alice"
    # /metrics only, and never with the owner's powers.
    assert (scraper.scope, scraper.is_self) == (METRICS, False)
    assert scraper.expires_at - SESSION_SECONDS > viewer.expires_at - 60
    with pytest.raises(ValueError, match="stranger"):
        door.open(Caller(None))


def test_no_session_outlives_the_certificate_it_came_from() -> None:
    signer = SessionSigner(b"k" * 32)
    door = DashboardDoor(signer, LoginCodes(), "127.0.0.1")
    door.port = 1
    soon = time.time() + 600
    scrape = door.open(Caller(ALICE), scrape_token=True, certificate_expires_at=soon)
    assert scrape.expires_at == soon
    link = door.open(Caller(ALICE), certificate_expires_at=soon)
    viewer = door.codes.redeem(link.login_path.removeprefix("/login?code="))
    assert viewer is not None
    assert viewer.expires_at == soon


def test_ending_every_session_makes_every_token_worthless_after_a_restart_too(
    tmp_path: Path,
) -> None:
    signer = SessionSigner.for_data_dir(tmp_path)
    token = signer.issue(_viewer(expires_at=time.time() + 60))
    assert signer.check(token) is not None
    signer.end_every_session()
    assert signer.check(token) is None
    assert SessionSigner.for_data_dir(tmp_path).check(token) is None
    assert stat.S_IMODE((tmp_path / "dashboard.key").stat().st_mode) == 0o600


async def test_live_events_reach_only_those_who_may_see_them() -> None:
    hub = EventHub()
    queue = hub.subscribe()
    hub.publish(LiveEvent("workflow", {"n": 1}, owner="bob"))
    hub.publish(LiveEvent("sample", {"n": 2}))
    first, second = queue.get_nowait(), queue.get_nowait()
    assert first is not None
    assert second is not None
    alice = Caller(ALICE)
    assert not first.visible_to(alice)
    assert second.visible_to(alice)
    assert first.visible_to(Caller(ALICE, is_self=True))


async def test_a_page_that_stops_reading_loses_its_stream_not_the_node_its_memory() -> None:
    hub = EventHub()
    slow = hub.subscribe()
    for n in range(MAX_QUEUED_EVENTS + 5):
        hub.publish(LiveEvent("sample", {"n": n}))
    assert len(hub) == 0
    assert slow.qsize() == MAX_QUEUED_EVENTS
    drained = [slow.get_nowait() for _ in range(slow.qsize())]
    assert drained[-1] is None  # the stream's end


async def test_closing_the_hub_ends_every_stream() -> None:
    hub = EventHub()
    queues = [hub.subscribe() for _ in range(3)]
    hub.close()
    assert [await asyncio.wait_for(q.get(), 1) for q in queues] == [None, None, None]


class _Histogram:
    def __init__(self) -> None:
        self.observed: list[float] = []

    def observe(self, value: float) -> None:
        self.observed.append(value)


def _event(task_id: str, kind: EventKind, at: float) -> TaskEvent:
    return TaskEvent(task_id=task_id, workflow_id="w", kind=kind, at=at)


def test_dispatch_latency_runs_from_queued_to_offered_and_forgets_ended_tasks() -> None:
    histogram = _Histogram()
    clock = DispatchClock(histogram)  # type: ignore[arg-type]
    clock.heard(_event("a", EventKind.QUEUED, 10.0))
    clock.heard(_event("b", EventKind.QUEUED, 10.0))
    clock.heard(_event("a", EventKind.OFFERED, 10.25))
    clock.heard(_event("a", EventKind.REQUEUED, 20.0))
    clock.heard(_event("a", EventKind.OFFERED, 23.0))
    clock.heard(_event("b", EventKind.CANCELLED, 30.0))
    assert histogram.observed == [0.25, 3.0]
    assert len(clock) == 0


def test_json_logs_are_one_object_per_line_with_extras_and_tracebacks() -> None:
    formatter = JsonLogFormatter()
    record = logging.LogRecord("vcnode.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.task_id = "t1"
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "warning"
    assert entry["logger"] == "vcnode.x"
    assert entry["message"] == "hello you"
    assert entry["task_id"] == "t1"
    assert entry["time"].endswith("+00:00")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad\nline", (), sys.exc_info())
    text = formatter.format(failed)
    assert "\n" not in text
    assert "RuntimeError: boom" in json.loads(text)["exception"]
