"""An OpenMalaria run that cannot find its schema or a resource file fails with a reason, in
`vcnode status`, that names the file: openMalaria's stderr opens with a line that names
nothing ("XSD error: instance document parsing failed"), names the file on line 2, goes
on for some 300 lines and ends with a stale errno ("OpenMalaria: No such file or
directory"). Real daemons and Docker; tests/fixtures/fake_openmalaria.py writes that stderr
as the real program does (checked line for line against a build of it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.harness import Daemon, Daemons, cli_json, run_cli, start_pool

pytestmark = [pytest.mark.integration, pytest.mark.docker]

FAKE_OPENMALARIA = Path(__file__).parents[1] / "fixtures" / "fake_openmalaria.py"


def one_run_workflow(tmp_path: Path, worker_image: str, resource_dir: str) -> Path:
    """`vcnode init openmalaria`'s file, one run, the stand-in in the worker image; the
    schema and no densities.csv travel in /input."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "fake_openmalaria.py").write_bytes(FAKE_OPENMALARIA.read_bytes())
    (extra / "scenario_48.xsd").write_text("<schema/>\n")
    workflow = tmp_path / "openmalaria.toml"
    written = run_cli("init", "openmalaria", "-o", str(workflow))
    assert written.returncode == 0, written.stderr
    text = workflow.read_text()
    for old, new in (
        ('image = "openmalaria:local"', f'image = "{worker_image}"'),
        ('resource_dir = "/om"', f'resource_dir = "{resource_dir}"\nextra_inputs = "extra"'),
        ('command = ["openMalaria",', 'command = ["python3", "/input/fake_openmalaria.py",'),
        ("seeds = 2", "seeds = 1"),
        (
            "sweep = { eir = [5, 20], coverage = [0.0, 0.6] }",
            "sweep = { eir = [5], coverage = [0.0] }",
        ),
    ):
        assert old in text, old
        text = text.replace(old, new)
    workflow.write_text(text)
    return workflow


def failed_run_reason(manager: Daemon, workflow: Path) -> tuple[str, str]:
    """The run's reason as `status --json` gives it, and `status` as a person reads it."""
    data = ["--data-dir", str(manager.data_dir)]
    submitted = run_cli("submit", str(workflow), *data, "--json", "--wait", timeout=240)
    assert submitted.returncode != 0, "the run cannot succeed"
    workflow_id = json.loads(submitted.stdout)["workflow_id"]
    status = cli_json("status", workflow_id, *data)
    run = next(task for task in status["tasks"] if task["name"] == "run-0000")
    assert run["state"] == "failed"
    return run["error"], run_cli("status", workflow_id, *data).stdout


def test_a_schema_not_in_resource_dir_fails_the_run_naming_the_schema_file(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_pool(daemons, volunteers=1)
    workflow = one_run_workflow(tmp_path, worker_image, "/input/om")  # the image has no /input/om
    reason, table = failed_run_reason(manager, workflow)
    assert reason == (
        "exited with code 67: :0:0 warning: unable to open primary document entity"
        " '/input/om/scenario_48.xsd'"
    )
    assert reason in table


def test_a_missing_resource_file_fails_the_run_naming_the_file(
    daemons: Daemons, tmp_path: Path, worker_image: str
) -> None:
    manager, _ = start_pool(daemons, volunteers=1)
    workflow = one_run_workflow(tmp_path, worker_image, "/input")  # the schema, no densities.csv
    reason, table = failed_run_reason(manager, workflow)
    assert reason == "exited with code 72: Error: Cannot read /input/densities.csv"
    assert reason in table
