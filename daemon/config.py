"""Node configuration: defaults < config file (TOML) < environment (VCNODE_*) < flags.

Every layer is reduced to a mapping of setting name -> raw value tagged with where it came
from, so an error can say exactly which file, variable or flag is wrong.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
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
    "allow_network": _parse_bool,
    "allow_process_runtime": _parse_bool,
    "allow_pull": _parse_bool,
    "allow_managers": _parse_allow_managers,
    "allow_images": _parse_allow_images,
    "allow_users": _parse_allow_users,
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
    ENV_PREFIX + "ROLE": "roles",
    ENV_PREFIX + "HEARTBEAT": "heartbeat_seconds",
}


@dataclass(frozen=True)
class Sourced:
    value: Any
    source: str


def read_config_file(path: Path) -> dict[str, Sourced]:
    """Flattens a TOML config file (top-level settings and a [limits] table)."""
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
        elif key == "role":
            layer["roles"] = Sourced(value, f"{path} (role)")
        elif key in SETTINGS:
            layer[key] = Sourced(value, f"{path} ({key})")
        else:
            raise ConfigError(
                f"config file {path}: unknown key {key!r}; known: {', '.join(SETTINGS)}, [limits]"
            )
    return layer


def read_environment(environ: Mapping[str, str]) -> dict[str, Sourced]:
    return {
        ENV_NAMES[name]: Sourced(value, f"environment variable {name}")
        for name, value in environ.items()
        if name in ENV_NAMES
    }


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
        name: Sourced(
            value, f"flag --{FLAG_NAMES.get(name, name.removeprefix('limits.').replace('_', '-'))}"
        )
        for name, value in flags.items()
        if value is not None
    }
    merged: dict[str, Sourced] = {**file_layer, **env_layer, **flag_layer}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, sourced in merged.items():
        parser = (
            LIMIT_SETTINGS[name.removeprefix("limits.")]
            if name.startswith("limits.")
            else SETTINGS[name]
        )
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
    config = NodeConfig(
        **{name: value for name, value in values.items() if not name.startswith("limits.")},
        limits=limits,
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
    return "\n".join(lines) + "\n"
