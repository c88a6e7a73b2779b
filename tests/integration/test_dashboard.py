"""The web dashboard in a real headless Chromium, against real daemons: a person logs in
with the link `vcnode dashboard` prints, watches a running workflow's progress move without
reloading, opens a task's log, and sees a volunteer go when it is killed."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.browser import chromium_page
from tests.integration.harness import (
    NO_DOCKER,
    Daemon,
    Daemons,
    cli_json,
    run_cli,
    start_pool,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Set to a folder to keep the screenshots (the README's comes from here).
SCREENSHOTS = os.environ.get("VCNODE_SCREENSHOTS", "")
TASKS = 8
PAGE_TIMEOUT_MS = 60_000


def _login_link(manager: Daemon) -> str:
    result = run_cli("dashboard", "--data-dir", str(manager.data_dir))
    assert result.returncode == 0, result.stderr
    link = result.stdout.splitlines()[0]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/login\?code=[\w-]+", link), link
    return link


def _workflow(tmp_path: Path) -> Path:
    # Each task takes about a second, so progress moves in steps the page must follow.
    tasks = "".join(
        f'\n[[tasks]]\nname = "step{n}"\n'
        f'command = ["sh", "-c", "echo step {n} starts; sleep 1; echo step {n} done > /output/o"]\n'
        'outputs = ["o"]\n'
        for n in range(TASKS)
    )
    path = tmp_path / "steps.toml"
    path.write_text(f'[workflow]\nname = "steps"\nvalidation = "none"\n{tasks}')
    return path


def _completed_on_page(page: Any) -> int:
    text = page.get_by_test_id("workflow-counts").inner_text()
    found = re.match(r"(\d+)/(\d+) completed", text)
    assert found is not None, text
    return int(found.group(1))


def _table_agrees(page: Any) -> bool:
    """Whether the task table (re-read after events) shows as many completed tasks as the
    counts (patched at each event) say."""
    completed = page.get_by_test_id("tasks").locator("td.state-completed").count()
    return bool(completed == _completed_on_page(page) < TASKS)


def _shot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def test_dashboard_shows_progress_live_and_a_killed_volunteer_going(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, volunteers = start_pool(
        daemons,
        "--allow-process-runtime",
        volunteers=2,
        env=NO_DOCKER,
        manager_args=("--http", "127.0.0.1:0"),
    )
    link = _login_link(manager)
    base = link.split("/login")[0]
    with chromium_page() as page:
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        # Without a session the page says how to get one, and the API refuses.
        page.goto(base + "/")
        page.get_by_test_id("login-needed").wait_for()
        assert page.request.get(base + "/api/pool").status == 401

        page.goto(link)
        page.wait_for_url(base + "/")
        page.get_by_test_id("chart-cpu").wait_for()
        workflow_id = cli_json(
            "submit", str(_workflow(tmp_path)), "--data-dir", str(manager.data_dir)
        )["workflow_id"]

        page.goto(f"{base}/#/workflows/{workflow_id}")
        page.get_by_test_id("workflow-counts").wait_for()
        loaded_at = page.evaluate("performance.timeOrigin")
        seen: set[int] = set()

        def reached(count: int) -> bool:
            seen.add(_completed_on_page(page))
            return max(seen) >= count

        wait_until(lambda: reached(TASKS // 2), 90, "the page to show half the tasks completed")
        if SCREENSHOTS:  # the README's picture: a workflow half way, its table caught up
            wait_until(lambda: _table_agrees(page), 30, "the task table to catch up")
            _shot(page, "dashboard.png")
        wait_until(lambda: reached(TASKS), 90, "the page to show every task completed")
        # It moved through steps on its own: no reload, several values on the way.
        assert page.evaluate("performance.timeOrigin") == loaded_at
        assert len(seen - {0, TASKS}) >= 2, f"the page showed only {sorted(seen)}"
        page.get_by_test_id("workflow-state").filter(has_text="completed").wait_for()
        assert page.get_by_test_id("timeline").locator("rect").count() == TASKS
        _shot(page, "workflow.png")

        # A task's log, as the task wrote it.
        page.get_by_role("link", name="step3", exact=True).first.click()
        page.get_by_test_id("log").filter(has_text="step 3 starts").wait_for()

        page.goto(f"{base}/#/pool")
        rows = {v.node_id: page.get_by_test_id(f"volunteer-{v.node_id}") for v in volunteers}
        for row in rows.values():
            row.get_by_test_id("volunteer-state").filter(has_text="online").wait_for()
        _shot(page, "pool.png")
        killed, kept = volunteers
        killed.kill()
        rows[killed.node_id].get_by_test_id("volunteer-state").filter(has_text="lost").wait_for()
        assert rows[kept.node_id].get_by_test_id("volunteer-state").inner_text() == "online"

        page.goto(f"{base}/#/")
        page.get_by_test_id("chart-completed").wait_for()
        _shot(page, "overview.png")


def test_a_used_login_link_and_a_forged_session_get_nothing(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(
        daemons, "--allow-process-runtime", env=NO_DOCKER, manager_args=("--http", "127.0.0.1:0")
    )
    link = _login_link(manager)
    base = link.split("/login")[0]
    with chromium_page() as page:
        page.goto(link)
        page.wait_for_url(base + "/")
        assert page.request.get(base + "/api/workflows").status == 200
        # The link worked once: in another browser it is refused.
        fresh = page.context.browser.new_context()
        try:
            again = fresh.request.get(link, max_redirects=0)
            assert again.status == 401
            assert "used already or expired" in again.text()
            forged = fresh.request.get(
                base + "/api/workflows", headers={"Authorization": "Bearer e30.AAAA"}
            )
            assert forged.status == 401
            metrics = fresh.request.get(base + "/metrics")
            assert metrics.status == 401
        finally:
            fresh.close()


def test_without_http_the_node_says_how_to_turn_the_dashboard_on(daemons: Daemons) -> None:
    manager, _ = start_pool(daemons, "--allow-process-runtime", env=NO_DOCKER)
    result = run_cli("dashboard", "--data-dir", str(manager.data_dir))
    assert result.returncode != 0
    assert "--http HOST:PORT" in result.stderr
