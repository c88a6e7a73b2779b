"""`vcnode service install|status|uninstall`: the daemon as a systemd service.

A donor types three commands; everything else (where the unit and config go, how the daemon
is started, restarted and stopped) is decided here. The daemon's settings go into a TOML
config file that `daemon --config FILE` reads, so the unit itself never changes with them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import config as config_module
from daemon.datadir import write_atomically
from daemon.errors import ConfigError, NodeError
from daemon.toml_values import toml_value

UNIT_NAME = "vcnode.service"
CONFIG_NAME = "daemon.toml"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_CONFIG_DIR = Path("/etc/vcnode")
# systemd's StateDirectory=vcnode: created (owner-only) by systemd before each start.
SYSTEM_DATA_DIR = Path("/var/lib/vcnode")
# What the daemon needs to stop cleanly (streams closed, state flushed, containers
# stopped) before systemd sends SIGKILL.
STOP_TIMEOUT_SECONDS = 90
RESTART_SECONDS = 5
# RestartSteps= and RestartMaxDelaySec= (an exponential back-off) came with systemd 254;
# older ones would warn about unknown keys, so they get a fixed delay and a start limit.
BACKOFF_SYSTEMD_VERSION = 254
# The daemon exits 2 for bad flags, config or data dir: restarting cannot fix those.
NO_RESTART_EXIT_CODE = 2
UP_STATES = {"running", "degraded", "starting", "initializing", "maintenance"}


@dataclass(frozen=True)
class Layout:
    """Where a system or user install puts its files, as the running system sees them
    (`unit`, `config`, `data_dir`), and where they are written (under `root`)."""

    user: bool
    unit: Path
    config: Path
    data_dir: Path
    root: Path | None = None

    def on_disk(self, path: Path) -> Path:
        return self.root / path.relative_to(path.anchor) if self.root else path

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *(["--user"] if self.user else []), *args]


def layout(user: bool, root: Path | None, environ: Mapping[str, str]) -> Layout:
    if not user:
        return Layout(
            False,
            SYSTEM_UNIT_DIR / UNIT_NAME,
            SYSTEM_CONFIG_DIR / CONFIG_NAME,
            SYSTEM_DATA_DIR,
            root,
        )
    home = Path(environ.get("HOME") or Path.home())
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    data_home = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return Layout(
        True,
        config_home / "systemd" / "user" / UNIT_NAME,
        config_home / "vcnode" / CONFIG_NAME,
        data_home / "vcnode",
        root,
    )


def _layout(args: argparse.Namespace, writes: bool = True) -> Layout:
    root = Path(os.path.abspath(args.root)) if args.root is not None else None
    if writes and not args.user and root is None and os.geteuid() != 0:
        raise ConfigError(
            "a system service is installed by root: run this with sudo, or add --user for a "
            "service of your own (it runs while you are logged in, or always after "
            "`loginctl enable-linger`)"
        )
    return layout(args.user, root, os.environ)


# --- rendering ----------------------------------------------------------------------------


def daemon_command() -> list[str]:
    """The installed entry point beside this interpreter (a venv's or pip's bin dir), else
    this interpreter running the package: the service runs the vcnode that installed it."""
    # Not resolved: a venv's python is a symlink, and resolving it would leave the venv.
    bin_dir = Path(os.path.abspath(sys.executable)).parent
    for name in ("vcnode", "node"):
        candidate = bin_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [os.path.abspath(sys.executable), "-m", "cli"]


def systemd_quote(word: str) -> str:
    """One word of a unit file's command line: '%' and '$' would be expanded by systemd,
    and spaces or quotes would split the word."""
    text = word.replace("%", "%%").replace("$", "$$")
    if text and not re.search(r"[\s\"'\\;]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(
    place: Layout,
    command: Sequence[str],
    data_dir: Path,
    log_file: Path | None = None,
    systemd_version: int | None = None,
) -> str:
    exec_start = " ".join(
        systemd_quote(word) for word in [*command, "daemon", "--config", str(place.config)]
    )
    unit = [
        "# Written by `vcnode service install`; `vcnode service uninstall` removes it.",
        f"# The daemon's settings are in {place.config}.",
        "[Unit]",
        "Description=vcnode volunteer-computing node",
    ]
    if not place.user:
        unit += [
            "Wants=network-online.target",
            "After=network-online.target docker.service",
        ]
    backoff = systemd_version is not None and systemd_version >= BACKOFF_SYSTEMD_VERSION
    if not backoff:
        # A fixed delay: at most 5 starts in 10 minutes, then systemd gives up (and
        # `vcnode service status` shows it failed).
        unit += ["StartLimitIntervalSec=600", "StartLimitBurst=5"]
    service = [
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_start}",
        # `systemctl reload vcnode`: the daemon reads its config again (daemon/reload.py).
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        f"RestartSec={RESTART_SECONDS}s",
    ]
    if backoff:
        service += ["RestartSteps=6", "RestartMaxDelaySec=5min"]
    service += [
        f"RestartPreventExitStatus={NO_RESTART_EXIT_CODE}",
        # SIGTERM to the daemon alone: it stops its own children (sandboxed tasks) in
        # order; whatever is left at the timeout gets SIGKILL.
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStopSec={STOP_TIMEOUT_SECONDS}s",
        "Environment=PYTHONUNBUFFERED=1",
        # The data dir holds keys and everyone's blobs: owner-only, as the daemon makes it.
        "UMask=0077",
    ]
    if not place.user:
        service += _system_hardening(data_dir, log_file)
    install = [
        "",
        "[Install]",
        f"WantedBy={'default.target' if place.user else 'multi-user.target'}",
    ]
    return "\n".join([*unit, *service, *install]) + "\n"


def _system_hardening(data_dir: Path, log_file: Path | None) -> list[str]:
    """What a root daemon cannot need. Kept short of what Docker or the bubblewrap sandbox
    use: /run (docker.sock) stays writable and namespaces and /proc stay allowed."""
    lines = [
        "NoNewPrivileges=yes",
        # /usr, /boot and /etc read-only; /var (the data dir) and /run (docker.sock) not.
        "ProtectSystem=full",
        "ProtectHome=read-only",
        # Task files live in the data dir, never in /tmp: Docker bind-mounts them from the
        # host's view, which a private /tmp would hide.
        "PrivateTmp=yes",
        "ProtectKernelModules=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ]
    writable = []
    if data_dir == SYSTEM_DATA_DIR:
        lines.append(f"StateDirectory={SYSTEM_DATA_DIR.name}")
        lines.append("StateDirectoryMode=0700")
    else:
        writable.append(data_dir)
    if log_file is not None and not log_file.is_relative_to(data_dir):
        writable.append(log_file.parent)
    if writable:
        lines.append("ReadWritePaths=" + " ".join(systemd_quote(str(p)) for p in writable))
    return lines


def render_config(
    settings: Mapping[str, Any],
    limits: Mapping[str, Any],
    schedule: Mapping[str, Any] | None = None,
) -> str:
    lines = [
        "# vcnode daemon settings, read by the service (`vcnode daemon --config THIS_FILE`).",
        "# Keys as in `vcnode daemon --help` (--max-cpus: [limits] max_cpus, --schedule-hours:",
        "# [schedule] hours). After a change, `vcnode config reload` (or `systemctl reload",
        "# vcnode`) applies the limits, [schedule] and the pause grace; other keys need a restart.",
    ]
    lines += [f"{name} = {toml_value(value)}" for name, value in settings.items()]
    if limits:
        lines += ["", "[limits]"]
        lines += [f"{name} = {toml_value(value)}" for name, value in limits.items()]
    if schedule:
        lines += ["", "[schedule]"]
        lines += [f"{name} = {toml_value(value)}" for name, value in schedule.items()]
    return "\n".join(lines) + "\n"


def _given_settings(
    args: argparse.Namespace, place: Layout
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The daemon settings given as flags (top-level, [limits], [schedule]), checked as the
    daemon will check them; the data dir and a relative --log-file made absolute (the
    service runs from /)."""
    flags = {name: getattr(args, name, None) for name in config_module.flag_settings()}
    given = {name for name, value in flags.items() if value is not None}
    if args.config is not None:
        given |= set(config_module.read_config_file(args.config))
    if "data_dir" not in given:
        flags["data_dir"] = str(place.data_dir)
        given.add("data_dir")
    # Flags and --config only: the service will not see this shell's VCNODE_* variables.
    node, _ = config_module.resolve(flags, {}, args.config)
    settings = {
        name: _plain(getattr(node, name)) for name in config_module.SETTINGS if name in given
    }
    limits = {
        name: _plain(getattr(node.limits, name))
        for name in config_module.LIMIT_SETTINGS
        if f"limits.{name}" in given
    }
    schedule = {
        name: config_module.schedule_value(name, node.schedule)
        for name in config_module.SCHEDULE_SETTINGS
        if f"schedule.{name}" in given
    }
    return settings, limits, schedule


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return Path(os.path.abspath(value))
    return list(value) if isinstance(value, tuple) else value


# --- systemd ------------------------------------------------------------------------------


def systemd_running(place: Layout) -> bool:
    """Whether a systemd manager is there to take the unit (sd_booted()'s test, then the
    manager's own answer, which for --user needs the user's session)."""
    if place.root is not None or not Path("/run/systemd/system").is_dir():
        return False
    if shutil.which("systemctl") is None:
        return False
    state = _run(place.systemctl("is-system-running"), check=False)
    return state.stdout.strip() in UP_STATES


def systemd_version() -> int | None:
    if shutil.which("systemctl") is None:
        return None
    try:
        result = _run(["systemctl", "--version"], check=False)
    except OSError:
        return None
    match = re.match(r"systemd (\d+)", result.stdout)
    return int(match.group(1)) if match else None


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise NodeError(
            f"`{' '.join(command)}` failed (exit {result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def _how_to_run(place: Layout, command: Sequence[str], log_file: Path | None) -> str:
    run = " ".join([*command, "daemon", "--config", str(place.config)])
    where_logs = (
        f"it logs to {log_file}"
        if log_file
        else "install with --log-file PATH for a rotated log file where there is no journald"
    )
    return (
        f"run the daemon yourself: {run}\n  ({where_logs}); or, on a host with systemd: "
        f"systemctl {'--user ' if place.user else ''}enable --now {UNIT_NAME}"
    )


# --- the commands -------------------------------------------------------------------------


def install(args: argparse.Namespace) -> int:
    place = _layout(args)
    settings, limits, schedule = _given_settings(args, place)
    data_dir = Path(settings["data_dir"])
    log_file = Path(settings["log_file"]) if "log_file" in settings else None
    command = daemon_command()
    unit_text = render_unit(place, command, data_dir, log_file, systemd_version())
    config_text = render_config(settings, limits, schedule)
    unit_path, config_path = place.on_disk(place.unit), place.on_disk(place.config)

    wanted = {unit_path: unit_text, config_path: config_text}
    existing = {path: _read(path) for path in wanted if path.exists()}
    conflicting = [path for path in existing if existing[path] != wanted[path]]
    unchanged = len(existing) == len(wanted) and not conflicting
    if conflicting and not args.force:
        raise ConfigError(
            "already installed with other settings: "
            + " and ".join(str(path) for path in conflicting)
            + (" exists" if len(conflicting) == 1 else " exist")
            + ". To replace what is there, run the same command with --force, or `vcnode "
            + f"service uninstall{' --user' if place.user else ''}` first"
        )
    if unchanged:
        print(f"already installed: {unit_path} and {config_path} are as asked; nothing rewritten")
    else:
        config_path.parent.mkdir(
            mode=0o755 if not place.user else 0o700, parents=True, exist_ok=True
        )
        # Owner-only: it may hold a join token.
        write_atomically(config_path, config_text, mode=0o600)
        os.chmod(config_path, 0o600)
        unit_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomically(unit_path, unit_text, mode=0o644)
        os.chmod(unit_path, 0o644)
        verb = "replaced" if conflicting else "wrote"
        print(f"{verb} {unit_path}")
        print(f"{verb} {config_path} (owner-only; the daemon's settings)")
    if data_dir != SYSTEM_DATA_DIR or place.user:
        # The daemon would make it too, but a system unit's ReadWritePaths= must exist.
        place.on_disk(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    if log_file is not None:
        place.on_disk(log_file).parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    if not systemd_running(place):
        why = (
            f"--root {place.root}: files written only"
            if place.root is not None
            else "systemd is not running here (no /run/systemd/system, or no user manager)"
        )
        print(f"could not enable {UNIT_NAME}: {why}.")
        print(_how_to_run(place, command, log_file))
        return 0
    _run(place.systemctl("daemon-reload"))
    _run(place.systemctl("enable", "--now", UNIT_NAME))
    if conflicting:
        _run(place.systemctl("restart", UNIT_NAME))  # --force: the new settings apply now
    sudo = "" if place.user else "sudo "
    print(f"enabled and started {UNIT_NAME}; logs: {sudo}journalctl {_journal_flag(place)} -f")
    print(f"data dir {data_dir}; `vcnode service status{' --user' if place.user else ''}` shows it")
    if place.user:
        print("to keep it running when you log out: loginctl enable-linger $USER")
    return 0


def _journal_flag(place: Layout) -> str:
    return f"--user-unit {UNIT_NAME}" if place.user else f"-u {UNIT_NAME}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def installed_data_dir(place: Layout) -> Path:
    """The data dir the installed config names (the layout's default if it names none)."""
    text = _read(place.on_disk(place.config))
    if text:
        try:
            value = tomllib.loads(text).get("data_dir")
        except tomllib.TOMLDecodeError:
            value = None
        if isinstance(value, str) and value:
            return Path(value)
    return place.data_dir


def uninstall(args: argparse.Namespace) -> int:
    place = _layout(args)
    unit_path, config_path = place.on_disk(place.unit), place.on_disk(place.config)
    data_dir = installed_data_dir(place)
    if not unit_path.exists() and not config_path.exists():
        print(f"not installed: neither {unit_path} nor {config_path} exists")
        return 0
    up = systemd_running(place)
    if up:
        # Stops it (SIGTERM, a clean stop) and removes its enable links.
        _run(place.systemctl("disable", "--now", UNIT_NAME), check=False)
    for path in (unit_path, config_path):
        if path.exists():
            path.unlink()
            print(f"removed {path}")
    with contextlib.suppress(OSError):  # only if empty: `vcnode login` keeps files there
        config_path.parent.rmdir()
    if up:
        _run(place.systemctl("daemon-reload"), check=False)
    elif place.root is None:
        print(
            "systemd is not running here: stop a daemon you started yourself with Ctrl-C or SIGTERM"
        )
    print(
        f"kept the data dir {place.on_disk(data_dir)} (this node's identity, certificate and "
        f"cache); delete it to forget this node: rm -rf {place.on_disk(data_dir)}"
    )
    return 0


def status(args: argparse.Namespace) -> int:
    place = _layout(args, writes=False)
    unit_path = place.on_disk(place.unit)
    if not unit_path.exists():
        flag = " --user" if place.user else ""
        print(
            f"service   not installed (no {unit_path}); `vcnode service install{flag}` installs it"
        )
        return 1
    print(f"unit      {unit_path}")
    print(f"config    {place.on_disk(place.config)}")
    if systemd_running(place):
        shown = _run(
            place.systemctl(
                "show",
                UNIT_NAME,
                "--property=UnitFileState,ActiveState,SubState,MainPID,NRestarts,"
                "ExecMainStatus,ActiveEnterTimestamp",
            ),
            check=False,
        )
        facts = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
        print(
            f"systemd   {facts.get('ActiveState', '?')} ({facts.get('SubState', '?')}), "
            f"{facts.get('UnitFileState', '?')}; pid {facts.get('MainPID', '?')}, "
            f"{facts.get('NRestarts', '0')} restarts, last exit status "
            f"{facts.get('ExecMainStatus', '?')}; since {facts.get('ActiveEnterTimestamp') or '-'}"
        )
        print(f"logs      journalctl {_journal_flag(place)}")
    else:
        print("systemd   not running here: the unit's state is unknown")
    print()
    from cli.main import main as vcnode_main  # at call time: cli.main imports this module

    data_dir = place.on_disk(installed_data_dir(place))
    return vcnode_main(["status", "--data-dir", str(data_dir)])
