"""Who sees what on the dashboard: the same rule as the CLI's, on real daemons over HTTP."""

from __future__ import annotations

import http.cookiejar
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from daemon.rpc.v1 import node_pb2, node_pb2_grpc
from daemon.transport.channels import open_sync_channel
from tests.integration.harness import (
    NO_DOCKER,
    Daemons,
    cli_json,
    run_cli,
    start_pool,
    wait_until,
)
from tests.trust import credential

pytestmark = pytest.mark.integration


class Browser:
    """An HTTP client with a cookie jar: what a browser keeps between requests."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def open(self, url: str) -> Any:
        """A response to read as it comes (a live-event stream)."""
        return self._opener.open(url, timeout=30)

    def get(self, url: str) -> tuple[int, Any]:
        """The status, and the body: parsed when it is JSON, else its text."""
        try:
            with self._opener.open(url, timeout=5) as response:
                return response.status, _body(response)
        except urllib.error.HTTPError as error:
            return error.code, _body(error)


def _body(response: Any) -> Any:
    data = response.read()
    if response.headers.get_content_type() == "application/json":
        return json.loads(data)
    return data.decode(errors="replace")


def _log_in_as(address: str, user: str) -> tuple[Browser, str]:
    """`vcnode dashboard` as `user` (a person's credential), and its link opened."""
    with open_sync_channel(address, credential(["user"], user=user)) as channel:
        reply = node_pb2_grpc.NodeServiceStub(channel).OpenDashboard(
            node_pb2.OpenDashboardRequest(), timeout=5
        )
    base = f"http://127.0.0.1:{reply.port}"
    browser = Browser()
    status, _ = browser.get(base + reply.login_path)
    assert status == 200  # redirected to the page
    return browser, base


def test_a_user_sees_only_their_own_workflows_and_cannot_open_anothers(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(
        daemons, "--allow-process-runtime", env=NO_DOCKER, manager_args=("--http", "127.0.0.1:0")
    )
    workflow = tmp_path / "w.toml"
    workflow.write_text(
        '[workflow]\nname = "admins"\nvalidation = "none"\n'
        '[[tasks]]\nname = "t"\ncommand = ["sh", "-c", "echo secret"]\n'
    )
    # Submitted with the node's own credential: its owner's workflow.
    theirs = cli_json("submit", str(workflow), "--data-dir", str(manager.data_dir))["workflow_id"]
    address = manager.address()
    alice, base = _log_in_as(address, "alice")

    # A link another site sends a browser to logs nobody in (login CSRF), and stays unused.
    with open_sync_channel(address, credential(["user"], user="mallory")) as channel:
        reply = node_pb2_grpc.NodeServiceStub(channel).OpenDashboard(
            node_pb2.OpenDashboardRequest(), timeout=5
        )
    planted = urllib.request.Request(
        base + reply.login_path, headers={"Sec-Fetch-Site": "cross-site"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(planted, timeout=5)
    assert refused.value.code == 403
    assert Browser().get(base + reply.login_path)[0] == 200  # opened directly, it works

    assert alice.get(base + "/api/whoami")[1]["owner"] == "alice"
    assert alice.get(base + "/api/workflows") == (200, [])
    status, body = alice.get(f"{base}/api/workflows/{theirs}")
    assert status == 403
    assert "not yours" in body["error"]
    status, _ = alice.get(f"{base}/api/workflows/{theirs}/tasks/t/log")
    assert status == 403
    assert alice.get(f"{base}/api/workflows/no-such-workflow")[0] == 404
    # The pool is for every person of the cluster.
    assert alice.get(base + "/api/pool")[0] == 200

    # The node's owner sees it, and its task's log once it ran.
    owner = Browser()
    link = cli_json("dashboard", "--data-dir", str(manager.data_dir))["url"]
    assert owner.get(link)[0] == 200

    def logged() -> str | None:
        status, body = owner.get(f"{base}/api/workflows/{theirs}/tasks/t/log")
        return body["content"] if status == 200 and body["state"] == "completed" else None

    assert wait_until(logged, 30, "the task's log") == "secret\n"
    status, body = owner.get(f"{base}/api/workflows/{theirs}/tasks/t/log?stream=nonsense")
    assert status == 400
    assert "stdout or stderr" in body["error"]
    too_long = "x" * 300
    assert owner.get(f"{base}/api/workflows/{too_long}")[0] == 400


def test_a_revoked_user_loses_the_dashboard_at_once(daemons: Daemons, tmp_path: Path) -> None:
    manager, _ = start_pool(
        daemons, "--allow-process-runtime", env=NO_DOCKER, manager_args=("--http", "127.0.0.1:0")
    )
    data = ["--data-dir", str(manager.data_dir)]
    token = cli_json("token", "create", "--role", "user", "--name", "mallory", *data)
    config_home = tmp_path / "mallory"
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    login = subprocess.run(
        [sys.executable, "-m", "cli", "login", token["token"]],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert login.returncode == 0, login.stderr
    opened = subprocess.run(
        [sys.executable, "-m", "cli", "dashboard", "--node", manager.address(), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert opened.returncode == 0, opened.stderr
    mallory = Browser()
    assert mallory.get(json.loads(opened.stdout)["url"])[0] == 200
    base = json.loads(opened.stdout)["metrics"].removesuffix("/metrics")
    assert mallory.get(base + "/api/workflows")[0] == 200
    # A live-event stream she opened before the revocation, read as it goes.
    stream = mallory.open(base + "/api/events")
    assert stream.readline() == b": connected\n"

    revoked = run_cli("token", "revoke", token["token_id"], *data)
    assert revoked.returncode == 0, revoked.stderr
    refused = wait_until(
        lambda: (lambda r: r if r[0] == 403 else None)(mallory.get(base + "/api/workflows")),
        10,
        "the revoked session to be refused",
    )
    assert "revoked" in refused[1]["error"]
    # The open stream says so at its next event (a keepalive at the latest) and ends.
    said = b"".join(iter(stream.readline, b""))
    assert b"event: refused" in said
    assert b"revoked" in said


def test_ending_every_session_logs_everyone_out_and_only_the_owner_may(
    daemons: Daemons,
) -> None:
    manager, _ = start_pool(
        daemons, "--allow-process-runtime", env=NO_DOCKER, manager_args=("--http", "127.0.0.1:0")
    )
    address = manager.address()
    alice, base = _log_in_as(address, "alice")
    assert alice.get(base + "/api/workflows")[0] == 200
    # Alice may not log everyone out.
    alices = credential(["user"], user="alice")
    with open_sync_channel(address, alices) as channel, pytest.raises(grpc.RpcError) as refused:
        node_pb2_grpc.NodeServiceStub(channel).OpenDashboard(
            node_pb2.OpenDashboardRequest(end_sessions=True), timeout=5
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert alice.get(base + "/api/workflows")[0] == 200
    # The node's owner may: every session ends, Alice's included.
    ended = run_cli("dashboard", "--end-sessions", "--data-dir", str(manager.data_dir))
    assert ended.returncode == 0, ended.stderr
    assert "ended" in ended.stdout
    assert alice.get(base + "/api/workflows")[0] == 401
