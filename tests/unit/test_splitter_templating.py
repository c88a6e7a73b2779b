"""What the user-command splitters share: argv templates, file names, the shipped script and
the batch_run.py wrapper (run here as a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from daemon.task_files import file_name_problem
from splitters import templating
from splitters.api import SplitterError


def test_placeholders_are_plain_names_and_doubled_braces_are_literal() -> None:
    assert templating.placeholders("--rate={rate}/{depth}", "command") == ["rate", "depth"]
    assert templating.placeholders("{{not}} {_x1}", "command") == ["_x1"]
    assert templating.placeholders("no braces", "command") == []


@pytest.mark.parametrize(
    "word", ["{", "}", "{a", "a}", "{}", "{0}", "{a.b}", "{a[0]}", "{a!r}", "{a:>4}", "{'k': 1}"]
)
def test_anything_but_a_plain_placeholder_is_an_error_on_the_key(word: str) -> None:
    with pytest.raises(SplitterError) as caught:
        templating.placeholders(word, "command")
    assert caught.value.key == "command"
    assert "{{" in caught.value.message, "the message says how to write a literal brace"


def test_render_substitutes_text_and_unescapes_braces() -> None:
    values = {"a": "1", "b": "x y"}
    assert templating.render("{a}-{b}", values) == "1-x y"
    assert templating.render("{{a}}={a}", values) == "{a}=1"
    assert templating.render("{a}", {"a": "{b}"}) == "{b}", "a value is never re-templated"


def test_render_command_expands_whole_word_lists() -> None:
    command = ["tool", "--batch={n}", "{files}", "--", "{files}"]
    argv = templating.render_command(command, {"n": "3"}, {"files": ["/input/a", "/input/b"]})
    assert argv == ("tool", "--batch=3", "/input/a", "/input/b", "--", "/input/a", "/input/b")
    assert templating.render_command(["x", "{files}"], {}, {"files": []}) == ("x",)


def test_check_command_returns_the_names_used() -> None:
    used = templating.check_command(["p", "{a}", "{b}{a}", "{many}"], "c", {"a", "b"}, {"many"})
    assert used == {"a", "b", "many"}


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        ([], "is empty"),
        (["p", 1], "word 2 is 1"),
        (["p", "{c}"], "{c}, which is not one of {a}, {many}"),
        (["p", "--in={many}"], "a word of its own"),
        (["", "x"], "the first word"),
    ],
)
def test_check_command_refuses(command: list[object], fragment: str) -> None:
    with pytest.raises(SplitterError) as caught:
        templating.check_command(command, "command", {"a"}, {"many"})
    assert caught.value.key == "command"
    assert fragment in caught.value.message


def test_values_are_text_with_booleans_as_toml_writes_them() -> None:
    assert [templating.as_text(v) for v in (True, False, 3, 0.5, "s")] == [
        "true",
        "false",
        "3",
        "0.5",
        "s",
    ]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.png", True),
        ("with space", True),
        ("ü.txt", True),
        ("", False),
        (".", False),
        ("..", False),
        ("a/b", False),
        ("a\\b", False),
        (".progress", False),
        ("bad\udcff", False),
    ],
)
def test_name_problem(name: str, ok: bool) -> None:
    assert (file_name_problem(name) is None) == ok


def test_the_script_travels_as_script_and_its_suffix(tmp_path: Path) -> None:
    assert templating.script_name(Path("dir/train.py")) == "script.py"
    assert templating.script_name(Path("run")) == "script"
    templating.check_script(["python3", "/input/script.py"], set(), Path("train.py"))
    with pytest.raises(SplitterError) as caught:
        templating.check_script(["python3", "/input/train.py"], set(), Path("train.py"))
    assert caught.value.key == "command"
    assert "{script}" in caught.value.message
    with pytest.raises(SplitterError) as missing:
        templating.check_script(["python3", "{script}"], {"script"}, None)
    assert missing.value.key == "script"


@pytest.mark.parametrize("image", ["", " ", "my image"])
def test_an_image_is_one_word(image: str) -> None:
    with pytest.raises(SplitterError) as caught:
        templating.check_image(image)
    assert caught.value.key == "image"


# --- the wrapper --------------------------------------------------------------------------


@pytest.fixture
def wrapper(tmp_path: Path) -> Path:
    return templating.ship_worker(tmp_path, templating.WRAPPER)


def run_wrapper(wrapper: Path, tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    record_in, out = tmp_path / "record.json", tmp_path / "out"
    record_in.write_text(json.dumps({"task": "t"}))
    out.mkdir(exist_ok=True)
    argv = [sys.executable, str(wrapper), str(record_in), str(out / "record.json"), "--"]
    return subprocess.run(
        [*argv, *command], capture_output=True, text=True, timeout=30, check=False
    )


def test_the_wrapper_runs_the_command_then_records_and_reports_100(
    wrapper: Path, tmp_path: Path
) -> None:
    done = run_wrapper(wrapper, tmp_path, sys.executable, "-c", "print('hello')")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n", "the command's output is the task's"
    assert json.loads((tmp_path / "out" / "record.json").read_text()) == {"task": "t"}
    assert (tmp_path / "out" / ".progress").read_text() == "100\n"
    assert resources.files("splitters.workers").joinpath(templating.WRAPPER).is_file()


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [("raise SystemExit(3)", 3), ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137)],
)
def test_a_failing_command_fails_the_task_and_records_nothing(
    wrapper: Path, tmp_path: Path, code: str, exit_code: int
) -> None:
    done = run_wrapper(wrapper, tmp_path, sys.executable, "-c", code)
    assert done.returncode == exit_code
    assert not (tmp_path / "out" / "record.json").exists()
    assert (tmp_path / "out" / ".progress").read_text() == "0\n"


def test_a_missing_program_exits_127_naming_it(wrapper: Path, tmp_path: Path) -> None:
    done = run_wrapper(wrapper, tmp_path, "no-such-program-here")
    assert done.returncode == 127
    assert "cannot run no-such-program-here" in done.stderr


def test_the_wrapper_wants_its_separator(wrapper: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(wrapper), "a", "b", "c"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "usage" in done.stderr
