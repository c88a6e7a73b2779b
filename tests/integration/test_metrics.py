"""/metrics (Prometheus exposition) and `--log-format json` on real daemons."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import NO_DOCKER, Daemons, cli_json, run_cli, start_pool, wait_until

pytestmark = pytest.mark.integration

TASKS = 3
# Above the size sent inline with a result: each output crosses as an upload.
OUTPUT_BYTES = 100_000


def _scrape(url: str, token: str) -> dict[str, float]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_tasks_transfers_volunteers_and_dispatch_latency(
    daemons: Daemons, tmp_path: Path
) -> None:
    manager, _ = start_pool(
        daemons,
        "--allow-process-runtime",
        env=NO_DOCKER,
        manager_args=("--http", "127.0.0.1:0", "--log-format", "json"),
    )
    token = cli_json("dashboard", "--scrape-token", "--data-dir", str(manager.data_dir))
    url = token["metrics"]
    assert url.startswith("http://127.0.0.1:")
    # Each output differs (else the blob store would take the second as already there).
    script = "echo {n} > /output/o; head -c " + str(OUTPUT_BYTES) + " /dev/zero >> /output/o"
    tasks = "".join(
        f'\n[[tasks]]\nname = "t{n}"\ncommand = ["sh", "-c", "{script.format(n=n)}"]\n'
        'outputs = ["o"]\n'
        for n in range(TASKS)
    )
    workflow = tmp_path / "w.toml"
    workflow.write_text(f'[workflow]\nname = "m"\nvalidation = "none"\n{tasks}')
    workflow_id = cli_json("submit", str(workflow), "--data-dir", str(manager.data_dir))[
        "workflow_id"
    ]
    run_cli("watch", workflow_id, "--data-dir", str(manager.data_dir), timeout=60)

    def scraped() -> dict[str, float] | None:
        found = _scrape(url, token["scrape_token"])
        return found if found.get("vcnode_tasks_completed_total{}") == TASKS else None

    metrics = wait_until(scraped, 30, "/metrics to count the tasks")
    assert metrics['vcnode_volunteers{"state": "online"}'] == 1
    assert metrics["vcnode_dispatch_latency_seconds_count{}"] >= TASKS
    assert metrics["vcnode_queue_length{}"] == 0
    assert metrics['vcnode_transfer_bytes_total{"direction": "received"}'] >= TASKS * OUTPUT_BYTES
    assert metrics['vcnode_tasks{"state": "running"}'] == 0
    assert "vcnode_event_loop_lag_seconds_count{}" in metrics

    # The scrape token opens /metrics and nothing else.
    pages = urllib.request.Request(
        url.removesuffix("/metrics") + "/api/workflows",
        headers={"Authorization": f"Bearer {token['scrape_token']}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused_pages:
        urllib.request.urlopen(pages, timeout=5)
    assert refused_pages.value.code == 403
    assert "/metrics only" in refused_pages.value.read().decode()

    # Without a token, or with a made-up one, /metrics says nothing.
    for headers in ({}, {"Authorization": "Bearer made.up"}):
        request = urllib.request.Request(url, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401

    # The daemon's own log is one JSON object per line.
    lines = [line for line in manager.log.splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    assert any("dashboard and /metrics at" in entry["message"] for entry in entries)
    assert {"time", "level", "logger", "message"} <= set(entries[0])
