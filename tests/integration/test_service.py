"""`vcnode service install|status|uninstall` as a donor runs them, on a machine without a
running systemd (this one, CI): files written under a root or the user's XDG dirs, never
overwritten silently, removed again; and the daemon the service would run, with --log-file."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from tests.integration.harness import Daemon, Daemons, run_cli, unique_cluster, wait_until
from tests.trust import provision

SYSTEMD_RUNNING = Path("/run/systemd/system").is_dir()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_system_install_writes_unit_and_owner_only_config_once_and_uninstall_removes_them(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    install = ("service", "install", "--root", str(root), "--role", "volunteer")
    first = run_cli(*install, "--max-cpus", "2", "--no-mdns")
    assert first.returncode == 0, first.stderr
    unit = root / "etc/systemd/system/vcnode.service"
    config = root / "etc/vcnode/daemon.toml"
    assert _mode(unit) == 0o644
    assert _mode(config) == 0o600, "the config may hold a join token"
    assert "StateDirectory=vcnode" in unit.read_text()
    assert "daemon --config /etc/vcnode/daemon.toml" in unit.read_text()
    settings = tomllib.loads(config.read_text())
    assert settings["roles"] == ["volunteer"]
    assert settings["mdns"] is False
    assert settings["data_dir"] == "/var/lib/vcnode"
    assert settings["limits"] == {"max_cpus": 2}
    assert "could not enable vcnode.service" in first.stdout
    assert "daemon --config /etc/vcnode/daemon.toml" in first.stdout, "how to run it instead"
    written = {path: (path.read_text(), path.stat().st_mtime_ns) for path in (unit, config)}

    again = run_cli(*install, "--max-cpus", "2", "--no-mdns")
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout
    assert {p: (p.read_text(), p.stat().st_mtime_ns) for p in written} == written

    other = run_cli(*install, "--max-cpus", "4")
    assert other.returncode == 2
    assert str(config) in other.stderr
    assert "--force" in other.stderr
    assert {p: (p.read_text(), p.stat().st_mtime_ns) for p in written} == written

    forced = run_cli(*install, "--max-cpus", "4", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"replaced {config}" in forced.stdout
    assert tomllib.loads(config.read_text())["limits"] == {"max_cpus": 4}
    assert _mode(config) == 0o600

    gone = run_cli("service", "uninstall", "--root", str(root))
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists()
    assert not config.exists()
    assert not config.parent.exists(), "its own empty dir goes too"
    assert f"kept the data dir {root}/var/lib/vcnode" in gone.stdout
    twice = run_cli("service", "uninstall", "--root", str(root))
    assert twice.returncode == 0
    assert "not installed" in twice.stdout


def test_install_refuses_a_config_that_would_not_start_the_daemon(tmp_path: Path) -> None:
    root = tmp_path / "root"
    no_role = run_cli("service", "install", "--root", str(root))
    assert no_role.returncode == 2
    assert "--role" in no_role.stderr
    bad = run_cli(
        "service", "install", "--root", str(root), "--role", "volunteer", "--max-cpus", "x"
    )
    assert bad.returncode == 2
    assert "--max-cpus" in bad.stderr
    assert not root.exists(), "nothing is written for a bad setting"


def test_status_of_a_service_not_installed_says_how_to_install(tmp_path: Path) -> None:
    result = run_cli("service", "status", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "not installed" in result.stdout
    assert "vcnode service install" in result.stdout


@pytest.mark.skipif(
    SYSTEMD_RUNNING, reason="systemd runs here: a user install would really enable the unit"
)
def test_user_service_config_runs_a_daemon_that_logs_to_its_file_and_status_shows_it(
    tmp_path: Path, daemons: Daemons
) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    log_file = tmp_path / "logs" / "daemon.log"
    installed = run_cli(
        "service", "install", "--user", "--role", "volunteer", "--no-mdns",
        "--listen", "127.0.0.1:0", "--cluster", unique_cluster(),
        "--coordinator", "127.0.0.1:9", "--log-file", str(log_file),
        env=env,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert "systemd is not running here" in installed.stdout
    config = tmp_path / "config" / "vcnode" / "daemon.toml"
    unit = tmp_path / "config" / "systemd" / "user" / "vcnode.service"
    data_dir = tmp_path / "data" / "vcnode"
    assert f"daemon --config {config}" in unit.read_text()
    assert "WantedBy=default.target" in unit.read_text()
    assert tomllib.loads(config.read_text())["data_dir"] == str(data_dir)
    assert tomllib.loads(config.read_text())["log_file"] == str(log_file)
    assert _mode(data_dir) == 0o700

    # What the unit's ExecStart runs, as the install told us to run it without systemd.
    provision(data_dir, ["volunteer"])
    daemon = Daemon(data_dir, ["--config", str(config)], env=env, pass_data_dir=False)
    daemons.add(daemon, provisioned=False)
    daemon.address()
    wait_until(
        lambda: log_file.exists() and "serving volunteer at" in log_file.read_text(),
        20,
        "the daemon's log lines in --log-file",
    )
    assert "serving" not in daemon.log, "with --log-file, logging leaves stderr alone"

    shown = run_cli("service", "status", "--user", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "systemd   not running here" in shown.stdout
    assert daemon.node_id in shown.stdout, "the daemon's own status follows"
    assert str(data_dir) in shown.stdout

    assert daemon.terminate() == 0
    assert "INFO daemon.app: stopping" in log_file.read_text()

    removed = run_cli("service", "uninstall", "--user", env=env)
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert not config.exists()
    assert data_dir.is_dir(), "the data dir stays"
    assert f"kept the data dir {data_dir}" in removed.stdout


def test_install_takes_settings_from_a_config_file_and_flags_and_no_environment(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    existing = tmp_path / "mine.toml"
    existing.write_text('role = "volunteer"\ncluster = "lab"\n\n[limits]\nmax_memory_mb = 512\n')
    env = {**os.environ, "VCNODE_HEARTBEAT": "7"}
    result = run_cli(
        "service", "install", "--root", str(root), "--config", str(existing),
        "--max-cpus", "1", "--log-file", "relative.log",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = tomllib.loads((root / "etc/vcnode/daemon.toml").read_text())
    assert settings["roles"] == ["volunteer"]
    assert settings["cluster"] == "lab"
    assert settings["limits"] == {"max_memory_mb": 512, "max_cpus": 1}
    assert "heartbeat_seconds" not in settings, "the service does not see this shell's VCNODE_*"
    assert Path(settings["log_file"]).is_absolute(), "the service does not run from here"
    unit = (root / "etc/systemd/system/vcnode.service").read_text()
    assert f"ReadWritePaths={Path(settings['log_file']).parent}" in unit
