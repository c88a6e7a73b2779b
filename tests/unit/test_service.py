"""`vcnode service`: the systemd unit and config it renders, and the rotated --log-file."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import LOG_FILE_BACKUPS, configure_logging
from cli.service import (
    SYSTEM_DATA_DIR,
    Layout,
    daemon_command,
    layout,
    render_config,
    render_unit,
    systemd_quote,
)
from daemon.config import resolve
from daemon.errors import NodeError


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _system() -> Layout:
    return layout(user=False, root=None, environ={})


def _user(tmp_path: Path) -> Layout:
    return layout(
        user=True,
        root=None,
        environ={
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
        },
    )


def test_system_unit_runs_the_daemon_on_its_config_restarts_it_and_lets_it_stop() -> None:
    place = _system()
    lines = _lines(render_unit(place, ["/opt/vc/bin/vcnode"], SYSTEM_DATA_DIR))
    assert "ExecStart=/opt/vc/bin/vcnode daemon --config /etc/vcnode/daemon.toml" in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "Restart=on-failure" in lines
    assert "RestartSec=5s" in lines
    assert "RestartPreventExitStatus=2" in lines, "bad settings (exit 2) must not loop"
    assert "KillSignal=SIGTERM" in lines
    assert "TimeoutStopSec=90s" in lines
    assert "After=network-online.target docker.service" in lines
    assert "WantedBy=multi-user.target" in lines
    assert "StateDirectory=vcnode" in lines
    assert "StateDirectoryMode=0700" in lines
    for hardening in ("NoNewPrivileges=yes", "ProtectSystem=full", "ProtectHome=read-only"):
        assert hardening in lines
    # What would cut the daemon off from /run/docker.sock or its sandbox.
    assert not any(
        line.startswith(("ProtectSystem=strict", "PrivateNetwork", "RestrictNamespaces"))
        for line in lines
    )
    assert not any(line.startswith("ReadWritePaths=") for line in lines)


def test_back_off_grows_on_a_systemd_that_has_it_and_is_a_start_limit_before() -> None:
    new = _lines(render_unit(_system(), ["/bin/vcnode"], SYSTEM_DATA_DIR, systemd_version=254))
    assert "RestartSteps=6" in new
    assert "RestartMaxDelaySec=5min" in new
    old = _lines(render_unit(_system(), ["/bin/vcnode"], SYSTEM_DATA_DIR, systemd_version=252))
    assert not any(line.startswith("RestartSteps") for line in old)
    assert "StartLimitIntervalSec=600" in old
    assert "StartLimitBurst=5" in old


def test_a_data_dir_and_log_file_elsewhere_are_the_only_writable_paths_added() -> None:
    lines = _lines(
        render_unit(
            _system(), ["/bin/vcnode"], Path("/home/lab/vc data"), Path("/var/log/vcnode/d.log")
        )
    )
    assert 'ReadWritePaths="/home/lab/vc data" /var/log/vcnode' in lines
    assert not any(line.startswith("StateDirectory=") for line in lines)


def test_user_unit_lives_in_the_users_xdg_dirs_without_system_hardening(tmp_path: Path) -> None:
    place = _user(tmp_path)
    assert place.unit == tmp_path / "config" / "systemd" / "user" / "vcnode.service"
    assert place.config == tmp_path / "config" / "vcnode" / "daemon.toml"
    assert place.data_dir == tmp_path / "data" / "vcnode"
    lines = _lines(render_unit(place, ["/bin/vcnode"], place.data_dir))
    assert f"ExecStart=/bin/vcnode daemon --config {place.config}" in lines
    assert "WantedBy=default.target" in lines
    assert "Restart=on-failure" in lines
    assert not any(
        line.startswith(("NoNewPrivileges", "StateDirectory", "After=")) for line in lines
    )


def test_user_dirs_default_to_home_without_xdg_variables(tmp_path: Path) -> None:
    place = layout(user=True, root=None, environ={"HOME": str(tmp_path)})
    assert place.unit == tmp_path / ".config" / "systemd" / "user" / "vcnode.service"
    assert place.data_dir == tmp_path / ".local" / "share" / "vcnode"


def test_command_words_are_quoted_for_systemd() -> None:
    assert systemd_quote("/usr/bin/vcnode") == "/usr/bin/vcnode"
    assert systemd_quote("/opt/my tools/vcnode") == '"/opt/my tools/vcnode"'
    assert systemd_quote("/opt/100%/$HOME") == "/opt/100%%/$$HOME"
    assert systemd_quote('a"b') == '"a\\"b"'


def test_the_entry_point_is_an_absolute_path_beside_this_interpreter() -> None:
    command = daemon_command()
    assert Path(command[0]).is_absolute()
    assert os.access(command[0], os.X_OK)
    assert command == [command[0]] or command[1:] == ["-m", "cli"]


def test_rendered_config_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    text = render_config(
        {
            "roles": ["volunteer"],
            "data_dir": tmp_path / "data",
            "log_file": tmp_path / "log" / "daemon.log",
            "mdns": False,
            "heartbeat_seconds": 2.5,
        },
        {"max_cpus": 2, "allow_network": True},
    )
    path = tmp_path / "daemon.toml"
    path.write_text(text, encoding="utf-8")
    config, sources = resolve({}, {}, path)
    assert config.roles == ("volunteer",)
    assert config.data_dir == tmp_path / "data"
    assert config.log_file == tmp_path / "log" / "daemon.log"
    assert config.mdns is False
    assert config.heartbeat_seconds == 2.5
    assert config.limits.max_cpus == 2
    assert config.limits.allow_network is True
    assert sources["log_file"] == f"{path} (log_file)"


def test_log_file_is_a_setting_of_file_environment_and_flag(tmp_path: Path) -> None:
    config, sources = resolve({"roles": "volunteer"}, {"VCNODE_LOG_FILE": "~/vc.log"})
    assert config.log_file == Path("~/vc.log").expanduser()
    assert sources["log_file"] == "environment variable VCNODE_LOG_FILE"
    config, sources = resolve({"roles": "volunteer", "log_file": str(tmp_path / "a.log")}, {})
    assert config.log_file == tmp_path / "a.log"
    assert sources["log_file"] == "flag --log-file"
    assert resolve({"roles": "volunteer"}, {})[0].log_file is None


def _verify(unit: Path, *extra: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        ["systemd-analyze", *extra, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys or bad values are warnings naming the file, with exit status 0.
    assert str(unit) not in result.stderr, result.stderr


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd); it verifies units "
    "without a running systemd",
)
def test_systemd_analyze_verifies_the_system_and_user_units(tmp_path: Path) -> None:
    from cli.service import systemd_version

    version = systemd_version()
    system = tmp_path / "system" / "vcnode.service"
    system.parent.mkdir()
    system.write_text(
        render_unit(
            _system(), daemon_command(), Path("/srv/vc"), Path("/var/log/vc/d.log"), version
        )
    )
    _verify(system)
    user = tmp_path / "user" / "vcnode.service"
    user.parent.mkdir()
    place = _user(tmp_path)
    user.write_text(render_unit(place, daemon_command(), place.data_dir, None, version))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    _verify(user, "--user", env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """configure_logging sets up a bare root logger, as the daemon's first act; the test
    runner's handlers are put back afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        if handler not in saved:
            handler.close()
    root.handlers, root.level = saved, level


def test_log_file_rotates_keeping_five_old_files(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    path = tmp_path / "logs" / "daemon.log"
    root_logger.handlers = []  # pytest adds its capture handler after fixtures are set up
    configure_logging("INFO", "text", path, max_bytes=1000)
    for number in range(200):
        logging.getLogger("vcnode.test").info("line %d %s", number, "x" * 50)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["daemon.log", *(f"daemon.log.{n}" for n in range(1, LOG_FILE_BACKUPS + 1))]
    assert all(p.stat().st_size <= 1000 for p in path.parent.iterdir())
    assert "line 199 " in path.read_text()


def test_an_unwritable_log_file_is_a_clear_error(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NodeError, match=r"cannot write the log file .*--log-file"):
        configure_logging("INFO", "text", blocker / "daemon.log")
