"""Node configuration: defaults < config file (TOML) < environment (VCNODE_*) < flags.

Every layer is reduced to a mapping of setting name -> raw value tagged with where it came
from, so an error can say exactly which file, variable or flag is wrong.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.capacity import DIGEST_PREFIX, MAX_SLOTS, is_digest
from daemon.errors import ConfigError
from daemon.models import OwnerLimits
from daemon.toml_values import toml_value
from daemon.trust.pki import is_label, is_owner_name
from daemon.trust.tokens import JoinToken

ROLES = ("coordinator", "volunteer", "manager")
PROTOCOL_VERSION = 1
DEFAULT_CLUSTER = "default"
DEFAULT_HEARTBEAT_SECONDS = 5.0
DEFAULT_PAUSE_GRACE_SECONDS = 600.0
COORDINATOR_PORT = 7450
# The coordinator's plaintext port for join requests (daemon/trust/join.py).
JOIN_PORT = 7449
MANAGER_PORT = 7451
ENV_PREFIX = "VCNODE_"
LOG_FORMATS = ("text", "json")


# --- the owner's rules (volunteer): the [schedule] table ----------------------------------
# What they mean and how they are applied: volunteer_node/rules.py. The settings live here,
# with the other settings, so the config can be read without the volunteer's modules.

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ALL_DAYS: frozenset[int] = frozenset(range(7))
MINUTES_PER_DAY = 24 * 60
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Hours:
    """A daily window of wall-clock time: from `start` for `length` minutes (1 to a day)."""

    start: int  # minutes after midnight, 0-1439
    end: int  # minutes after midnight, 0-1440; at or before `start`: the next day's

    @property
    def length(self) -> int:
        return (self.end - self.start) % MINUTES_PER_DAY or MINUTES_PER_DAY

    @property
    def all_day(self) -> bool:
        return self.length == MINUTES_PER_DAY and self.start == 0

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


ALL_DAY = Hours(0, MINUTES_PER_DAY)


@dataclass(frozen=True)
class OwnerRules:
    """The [schedule] table: when a volunteer's owner lets tasks run. The default stops
    work on battery only."""

    days: frozenset[int] = ALL_DAYS  # 0 is monday, as date.weekday()
    hours: Hours = ALL_DAY
    idle_minutes: int = 0  # 0: off
    max_other_load: float = 0.0  # percent of the machine's CPUs; 0: off
    on_battery: bool = False

    @property
    def has_schedule(self) -> bool:
        return self.days != ALL_DAYS or not self.hours.all_day

    def schedule_text(self) -> str:
        """As the reasons say it: mon-fri 18:00-08:00, sat-sun, 18:00-08:00; "" for none."""
        parts = [] if self.days == ALL_DAYS else [days_text(self.days)]
        return " ".join(parts + ([] if self.hours.all_day else [str(self.hours)]))


def _weekday(name: str) -> int:
    word = name.strip().lower()
    if word in WEEKDAYS:
        return WEEKDAYS.index(word)
    if word in _FULL_WEEKDAYS:
        return _FULL_WEEKDAYS.index(word)
    raise ValueError(f"unknown day {name.strip()!r}; days are {', '.join(WEEKDAYS)}")


def parse_days(value: Any) -> frozenset[int]:
    """Days as a TOML list or a comma-separated text, each a day or a range (`mon-fri`; a
    range may wrap the week: `fri-mon`)."""
    if isinstance(value, frozenset | set):
        if not value <= ALL_DAYS:
            raise ValueError(f"expected weekday numbers 0-6, got {sorted(value)}")
        items: list[str] = [WEEKDAYS[day] for day in value]
    elif isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        items = [part for item in value for part in item.split(",")]
    else:
        raise ValueError(f'expected days such as mon-fri or ["mon", "wed"], got {value!r}')
    days: set[int] = set()
    for item in (item for item in items if item.strip()):
        first, dash, last = item.partition("-")
        if not dash:
            days.add(_weekday(first))
            continue
        start, end = _weekday(first), _weekday(last)
        days.update((start + step) % 7 for step in range((end - start) % 7 + 1))
    if not days:
        raise ValueError("no day given; for every day leave days out, or give mon-sun")
    return frozenset(days)


def parse_hours(value: Any) -> Hours:
    """A window of local time, HH:MM-HH:MM; the end may be 24:00, or at or before the start
    for a window that runs past midnight."""
    if isinstance(value, Hours):
        return value
    found = _HOURS.match(str(value))
    if found is None:
        raise ValueError(f"expected HH:MM-HH:MM (e.g. 18:00-08:00), got {value!r}")
    start_h, start_m, end_h, end_m = (int(group) for group in found.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise ValueError(f"not a time of day in {value!r} (00:00 to 23:59, or 24:00 to end)")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise ValueError(f"{value!r} is an empty window; for all day give 00:00-24:00")
    return Hours(start, end)


def parse_load_percent(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage, got {value!r}")
    try:
        number = float(str(value).strip().removesuffix("%"))
    except ValueError:
        raise ValueError(f"expected a percentage of the machine's CPUs, got {value!r}") from None
    if not 0 <= number < 100:
        raise ValueError(f"expected a percentage below 100 (0 turns it off), got {value!r}")
    return number


def days_text(days: Collection[int]) -> str:
    """Days as a person writes them (mon-fri, mon,wed,fri, fri-mon): runs of days as
    ranges, from the first day after a gap (so a run over the weekend stays one)."""
    chosen = sorted(set(days))
    if not chosen:
        return "no day"
    if len(chosen) == 7:
        return "mon-sun"
    first = next(day for day in range(7) if day in chosen and (day - 1) % 7 not in chosen)
    runs: list[list[int]] = []
    for step in range(7):
        day = (first + step) % 7
        if day not in chosen:
            continue
        if runs and (runs[-1][-1] + 1) % 7 == day:
            runs[-1].append(day)
        else:
            runs.append([day])
    texts = [
        WEEKDAYS[run[0]] if len(run) == 1 else f"{WEEKDAYS[run[0]]}-{WEEKDAYS[run[-1]]}"
        for run in sorted(runs, key=lambda run: run[0])
    ]
    return ",".join(texts)


def day_names(days: Collection[int]) -> list[str]:
    """For a TOML list: ["mon", "tue", ...] in week order."""
    return [WEEKDAYS[day] for day in sorted(set(days))]


def schedule_value(name: str, rules: OwnerRules) -> Any:
    """A [schedule] setting as TOML writes it (days as names, hours as HH:MM-HH:MM)."""
    value = getattr(rules, name)
    if name == "days":
        return day_names(value)
    if name == "hours":
        return str(value)
    return value


@dataclass(frozen=True)
class NodeConfig:
    roles: tuple[str, ...]
    data_dir: Path
    listen: str
    cluster: str = DEFAULT_CLUSTER
    coordinator: str | None = None
    # HOST or HOST:PORT peers on other hosts are told to dial (NAT, several interfaces).
    advertise: str | None = None
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    # How long a volunteer's pause (or an owner's rule) may freeze its tasks before it hands
    # them back to the pool to run elsewhere.
    pause_grace_seconds: float = DEFAULT_PAUSE_GRACE_SECONDS
    # A join token (`vcnode token create`): needed once, for the first start.
    token: str | None = None
    # Where a coordinator takes join requests; by default the listen host, port 7449 next
    # to the default 7450 and any free port otherwise.
    join_listen: str | None = None
    limits: OwnerLimits = field(default_factory=OwnerLimits)
    # The volunteer owner's rules that stop work by themselves (hours, idle, load, battery).
    schedule: OwnerRules = field(default_factory=OwnerRules)
    log_level: str = "INFO"
    # text, or json: one object per line for log shippers.
    log_format: str = "text"
    # Where the log goes instead of stderr (hosts without journald); rotated (cli/main.py).
    log_file: Path | None = None
    # Where the web dashboard and /metrics listen; None keeps them off (and unimported).
    http: str | None = None

    @property
    def listen_host(self) -> str:
        return split_host_port(self.listen, "listen")[0]

    @property
    def listen_port(self) -> int:
        return split_host_port(self.listen, "listen")[1]

    @property
    def join_address(self) -> str:
        if self.join_listen:
            return self.join_listen
        port = JOIN_PORT if self.listen_port == COORDINATOR_PORT else 0
        host = self.listen_host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vcnode"


def default_listen(roles: tuple[str, ...]) -> str:
    """Coordinators and managers must be reachable from the LAN on a known port;
    a volunteer only dials out, so it takes any free port."""
    if "coordinator" in roles:
        return f"0.0.0.0:{COORDINATOR_PORT}"
    if "manager" in roles:
        return f"0.0.0.0:{MANAGER_PORT}"
    return "0.0.0.0:0"


def split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:7450), got {value!r}")
    return host.strip("[]"), int(port_text)


# --- parsing of single settings ---------------------------------------------------------


def _parse_roles(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("expected a comma-separated list of roles")
    roles = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if not roles:
        raise ValueError(f"no role given; choose from {', '.join(ROLES)}")
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r}; choose from {', '.join(ROLES)}")
    return roles


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_positive_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return number


def _parse_non_negative_int(value: Any) -> int:
    if isinstance(value, bool | float):
        raise ValueError(f"expected a whole number, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"must be 0 or more, got {value!r}")
    return number


def _parse_percent(value: Any) -> int:
    number = _parse_non_negative_int(value)
    if number > 100:
        raise ValueError(f"a percentage from 1 to 100 (0: no throttle), got {value!r}")
    return number


def _parse_slots(value: Any) -> int:
    number = _parse_non_negative_int(value)
    if number > MAX_SLOTS:
        raise ValueError(f"at most {MAX_SLOTS} tasks at once, got {value!r}")
    return number


def _parse_address(value: Any) -> str:
    text = str(value).strip()
    try:
        split_host_port(text, "address")
    except ConfigError as error:  # resolve() adds where the value came from
        raise ValueError(str(error)) from None
    return text


def _parse_advertise(value: Any) -> str:
    text = str(value).strip()
    host = text.rpartition(":")[0] if text.rpartition(":")[2].isdigit() else text
    host = host.removeprefix("[").removesuffix("]")
    if not host or host in ("0.0.0.0", "::") or any(c.isspace() for c in text):
        raise ValueError(
            f"expected HOST or HOST:PORT that peers can dial (not a wildcard), got {value!r}"
        )
    return text


def _parse_name(value: Any) -> str:
    text = str(value).strip()
    if not text or len(text) > 63 or not all(c.isalnum() or c in "-_." for c in text):
        raise ValueError(f"expected 1-63 letters, digits, '-', '_' or '.', got {value!r}")
    return text


def _parse_interfaces(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("expected a comma-separated list of IPv4 addresses")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _parse_token(value: Any) -> str:
    text = str(value).strip()
    try:
        JoinToken.parse(text)
    except ValueError as error:
        raise ValueError(str(error)) from None
    return text


def _parse_log_format(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in LOG_FORMATS:
        raise ValueError(f"expected {' or '.join(LOG_FORMATS)}, got {value!r}")
    return text


def _parse_log_level(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"expected debug, info, warning or error, got {value!r}")
    return text


# Entries an allow-list may hold: an owner's list, not a registry's.
MAX_ALLOW_ENTRIES = 256


def _parse_list(value: Any, what: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"expected a list of {what} (a TOML list, or comma-separated)")
    entries = list(dict.fromkeys(item.strip() for item in items if item.strip()))
    if len(entries) > MAX_ALLOW_ENTRIES:
        raise ValueError(f"at most {MAX_ALLOW_ENTRIES} entries, got {len(entries)}")
    return entries


def _parse_allow_managers(value: Any) -> tuple[str, ...]:
    entries = _parse_list(value, "manager node ids")
    for entry in entries:
        if not is_label(entry):
            raise ValueError(
                f"{entry!r} is not a manager's node id (lowercase letters, digits and '-'; "
                "`vcnode status` on the manager shows it)"
            )
    return tuple(entries)


def _parse_allow_users(value: Any) -> tuple[str, ...]:
    entries = _parse_list(value, "user names")
    for entry in entries:
        if not is_owner_name(entry):
            raise ValueError(
                f"{entry!r} is not a user name (a lowercase letter, then up to 31 lowercase "
                "letters, digits or '-', as in their certificate)"
            )
    return tuple(entries)


def _parse_allow_images(value: Any) -> tuple[str, ...]:
    entries = _parse_list(value, "image patterns or sha256: image IDs")
    for entry in entries:
        if is_digest(entry):
            digest = entry.removeprefix(DIGEST_PREFIX)
            if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
                raise ValueError(
                    f"{entry!r} is not an image ID: expected sha256: and 64 lowercase hex "
                    "digits, as `docker image inspect --format {{.Id}}` prints"
                )
        elif len(entry) > 255 or any(c.isspace() for c in entry):
            raise ValueError(
                f"{entry!r} is not an image pattern: expected a reference with * and ? "
                "wildcards (e.g. vcnode/* or ghcr.io/lab/tool:1.*), at most 255 characters"
            )
    return tuple(entries)


# name -> parser. The same names are used as TOML keys, as VCNODE_<NAME> variables and
# (with '-' for '_') as flags.
SETTINGS: dict[str, Callable[[Any], Any]] = {
    "roles": _parse_roles,
    "data_dir": lambda value: Path(str(value)).expanduser(),
    "listen": _parse_address,
    "cluster": _parse_name,
    "coordinator": _parse_address,
    "advertise": _parse_advertise,
    "mdns": _parse_bool,
    "mdns_interfaces": _parse_interfaces,
    "heartbeat_seconds": _parse_positive_float,
    "pause_grace_seconds": _parse_positive_float,
    "log_level": _parse_log_level,
    "log_format": _parse_log_format,
    "log_file": lambda value: Path(str(value)).expanduser(),
    "http": _parse_address,
    "token": _parse_token,
    "join_listen": _parse_address,
}
LIMIT_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "max_cpus": _parse_non_negative_int,
    "max_memory_mb": _parse_non_negative_int,
    "max_disk_mb": _parse_non_negative_int,
    "max_concurrent_tasks": _parse_slots,
    "cpu_throttle_percent": _parse_percent,
    "allow_network": _parse_bool,
    "allow_process_runtime": _parse_bool,
    "allow_pull": _parse_bool,
    "allow_managers": _parse_allow_managers,
    "allow_images": _parse_allow_images,
    "allow_users": _parse_allow_users,
}
# The [schedule] table; flags --schedule-<name>, variables VCNODE_SCHEDULE_<NAME>.
SCHEDULE_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "days": parse_days,
    "hours": parse_hours,
    "idle_minutes": _parse_non_negative_int,
    "max_other_load": parse_load_percent,
    "on_battery": _parse_bool,
}
# Flags whose name differs from their setting's.
FLAG_NAMES = {
    "roles": "role",
    "heartbeat_seconds": "heartbeat",
    "pause_grace_seconds": "pause-grace",
    "mdns": "no-mdns",
}
ENV_NAMES = {
    **{ENV_PREFIX + name.upper(): name for name in SETTINGS},
    **{ENV_PREFIX + name.upper(): f"limits.{name}" for name in LIMIT_SETTINGS},
    **{f"{ENV_PREFIX}SCHEDULE_{name.upper()}": f"schedule.{name}" for name in SCHEDULE_SETTINGS},
    ENV_PREFIX + "ROLE": "roles",
    ENV_PREFIX + "HEARTBEAT": "heartbeat_seconds",
}


@dataclass(frozen=True)
class Sourced:
    value: Any
    source: str


def read_config_file(path: Path) -> dict[str, Sourced]:
    """Flattens a TOML config file (top-level settings, a [limits] and a [schedule] table)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    layer: dict[str, Sourced] = {}
    for key, value in document.items():
        if key == "limits" and isinstance(value, dict):
            for limit_key, limit_value in value.items():
                if limit_key not in LIMIT_SETTINGS:
                    raise ConfigError(
                        f"config file {path}: unknown key 'limits.{limit_key}'; "
                        f"known: {', '.join(LIMIT_SETTINGS)}"
                    )
                layer[f"limits.{limit_key}"] = Sourced(limit_value, f"{path} (limits.{limit_key})")
        elif key == "schedule" and isinstance(value, dict):
            for rule_key, rule_value in value.items():
                if rule_key not in SCHEDULE_SETTINGS:
                    raise ConfigError(
                        f"config file {path}: unknown key 'schedule.{rule_key}'; "
                        f"known: {', '.join(SCHEDULE_SETTINGS)}"
                    )
                layer[f"schedule.{rule_key}"] = Sourced(rule_value, f"{path} (schedule.{rule_key})")
        elif key == "role":
            layer["roles"] = Sourced(value, f"{path} (role)")
        elif key in SETTINGS:
            layer[key] = Sourced(value, f"{path} ({key})")
        else:
            raise ConfigError(
                f"config file {path}: unknown key {key!r}; known: {', '.join(SETTINGS)}, "
                "[limits], [schedule]"
            )
    return layer


def read_environment(environ: Mapping[str, str]) -> dict[str, Sourced]:
    return {
        ENV_NAMES[name]: Sourced(value, f"environment variable {name}")
        for name, value in environ.items()
        if name in ENV_NAMES
    }


def flag_name(setting: str) -> str:
    """The flag of a setting (without --): max-cpus for limits.max_cpus, schedule-hours
    for schedule.hours."""
    if setting in FLAG_NAMES:
        return FLAG_NAMES[setting]
    table, _, name = setting.rpartition(".")
    return ("schedule-" if table == "schedule" else "") + name.replace("_", "-")


def flag_settings() -> list[str]:
    """Every setting a flag may give: SETTINGS, then limits.* and schedule.*."""
    return [
        *SETTINGS,
        *(f"limits.{name}" for name in LIMIT_SETTINGS),
        *(f"schedule.{name}" for name in SCHEDULE_SETTINGS),
    ]


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None = None,
) -> tuple[NodeConfig, dict[str, str]]:
    """Merges the layers and returns the config and, per setting, where its value came from.

    `flags` holds only the flags the user actually gave (None means not given).
    """
    env_layer = read_environment(environ)
    if config_file is None and "VCNODE_CONFIG" in environ:
        config_file = Path(environ["VCNODE_CONFIG"])
    file_layer = read_config_file(config_file) if config_file else {}
    flag_layer = {
        name: Sourced(value, f"flag --{flag_name(name)}")
        for name, value in flags.items()
        if value is not None
    }
    merged: dict[str, Sourced] = {**file_layer, **env_layer, **flag_layer}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, sourced in merged.items():
        if name.startswith("limits."):
            parser = LIMIT_SETTINGS[name.removeprefix("limits.")]
        elif name.startswith("schedule."):
            parser = SCHEDULE_SETTINGS[name.removeprefix("schedule.")]
        else:
            parser = SETTINGS[name]
        try:
            values[name] = parser(sourced.value)
        except ValueError as error:
            raise ConfigError(f"{sourced.source}: {error}") from None
        sources[name] = sourced.source

    if "roles" not in values:
        raise ConfigError(
            "no role given: pass --role coordinator, volunteer, manager or a comma list of them"
        )
    roles: tuple[str, ...] = values["roles"]
    values.setdefault("data_dir", default_data_dir())
    values.setdefault("listen", default_listen(roles))
    limits = OwnerLimits(
        **{
            name.removeprefix("limits."): value
            for name, value in values.items()
            if name.startswith("limits.")
        }
    )
    schedule = OwnerRules(
        **{
            name.removeprefix("schedule."): value
            for name, value in values.items()
            if name.startswith("schedule.")
        }
    )
    config = NodeConfig(
        **{name: value for name, value in values.items() if "." not in name},
        limits=limits,
        schedule=schedule,
    )
    for name in ("data_dir", "listen", "cluster", "mdns", "heartbeat_seconds"):
        sources.setdefault(name, "default")
    return config, sources


def render(config: NodeConfig, sources: Mapping[str, str]) -> str:
    """The effective configuration as TOML, each line saying where its value came from."""

    lines = []
    for name in SETTINGS:
        value = getattr(config, name)
        if value is None:
            continue
        if name == "token":
            value = "(set: used once to join)"  # a secret: never echoed
        lines.append(f"{name} = {toml_value(value)}  # {sources.get(name, 'default')}")
    lines.append("")
    lines.append("[limits]")
    for name in LIMIT_SETTINGS:
        value = getattr(config.limits, name)
        lines.append(f"{name} = {toml_value(value)}  # {sources.get('limits.' + name, 'default')}")
    lines.append("")
    lines.append("[schedule]")
    for name in SCHEDULE_SETTINGS:
        value = schedule_value(name, config.schedule)
        source = sources.get("schedule." + name, "default")
        lines.append(f"{name} = {toml_value(value)}  # {source}")
    return "\n".join(lines) + "\n"
