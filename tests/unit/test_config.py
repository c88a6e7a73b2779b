"""Settings from defaults, a TOML file, VCNODE_* variables and flags, in that order."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from daemon.config import default_listen, render, resolve
from daemon.errors import ConfigError


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text(
        'role = "volunteer"\ncluster = "file"\nheartbeat_seconds = 9\n[limits]\nmax_cpus = 2\n'
    )
    config, sources = resolve(
        {"heartbeat_seconds": "1.5"},
        {"VCNODE_CLUSTER": "env", "VCNODE_HEARTBEAT": "3"},
        file,
    )
    assert config.roles == ("volunteer",)
    assert config.cluster == "env"
    assert config.heartbeat_seconds == 1.5
    assert config.limits.max_cpus == 2
    assert config.mdns is True
    assert sources["cluster"] == "environment variable VCNODE_CLUSTER"
    assert sources["heartbeat_seconds"] == "flag --heartbeat"
    assert sources["roles"] == f"{file} (role)"
    assert sources["mdns"] == "default"


def test_roles_are_a_comma_list_without_duplicates() -> None:
    config, _ = resolve({"roles": "coordinator, volunteer,coordinator"}, {})
    assert config.roles == ("coordinator", "volunteer")
    assert config.listen == default_listen(config.roles) == "0.0.0.0:7450"


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"roles": "painter"}, {}, "unknown role 'painter'"),
        ({}, {}, "no role given"),
        (
            {"roles": "volunteer"},
            {"VCNODE_HEARTBEAT": "soon"},
            "environment variable VCNODE_HEARTBEAT",
        ),
        ({"roles": "volunteer", "listen": "nowhere"}, {}, "must be HOST:PORT"),
        ({"roles": "volunteer", "limits.max_cpus": "-1"}, {}, "flag --max-cpus: must be 0 or more"),
        ({"roles": "volunteer", "cluster": "a b"}, {}, "flag --cluster"),
    ],
)
def test_bad_values_name_their_source(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(flags, environ)


def test_bad_config_files_are_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("roles = [")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        resolve({}, {}, broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('colour = "blue"')
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        resolve({}, {}, unknown)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({}, {}, tmp_path / "missing.toml")


def test_rendered_config_is_toml_that_round_trips(tmp_path: Path) -> None:
    config, sources = resolve({"roles": "coordinator,manager", "data_dir": str(tmp_path)}, {})
    document = tomllib.loads(render(config, sources))
    assert document["roles"] == ["coordinator", "manager"]
    assert document["data_dir"] == str(tmp_path)
    again, _ = resolve({}, {}, _write(tmp_path / "again.toml", render(config, sources)))
    assert again == config


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
