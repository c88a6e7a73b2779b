"""Settings from defaults, a TOML file, VCNODE_* variables and flags, in that order."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from daemon.config import default_listen, render, resolve
from daemon.errors import ConfigError
from daemon.models import OwnerLimits


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "node.toml",
        'role = "volunteer"\ncluster = "file"\nheartbeat_seconds = 9\nlog_level = "debug"\n',
    )
    config, sources = resolve(
        {"cluster": "flag", "mdns": None},
        {"VCNODE_CLUSTER": "env", "VCNODE_HEARTBEAT": "3", "UNRELATED": "x"},
        file,
    )
    assert config.cluster == "flag"
    assert sources["cluster"] == "flag --cluster"
    assert config.heartbeat_seconds == 3.0
    assert sources["heartbeat_seconds"] == "environment variable VCNODE_HEARTBEAT"
    assert config.log_level == "DEBUG"
    assert sources["log_level"] == f"{file} (log_level)"
    assert config.roles == ("volunteer",)
    assert sources["roles"] == f"{file} (role)"
    assert config.mdns is True, "a flag given as None counts as not given"
    assert sources["mdns"] == "default"


def test_the_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    file = _write(tmp_path / "node.toml", 'roles = ["manager"]\n')
    config, sources = resolve({}, {"VCNODE_CONFIG": str(file)})
    assert config.roles == ("manager",)
    assert sources["roles"] == f"{file} (roles)"


def test_roles_are_a_comma_list_in_order_without_duplicates() -> None:
    config, sources = resolve({"roles": " volunteer, coordinator,volunteer,, "}, {})
    assert config.roles == ("volunteer", "coordinator")
    assert sources["roles"] == "flag --role"


def test_a_role_can_come_from_vcnode_role() -> None:
    config, sources = resolve({}, {"VCNODE_ROLE": "manager,volunteer"})
    assert config.roles == ("manager", "volunteer")
    assert sources["roles"] == "environment variable VCNODE_ROLE"


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"roles": "volunteer,painter"}, {}, r"flag --role: unknown role 'painter'; choose from"),
        ({}, {}, "no role given"),
        ({"roles": " , "}, {}, "flag --role: no role given"),
        (
            {"roles": "volunteer"},
            {"VCNODE_HEARTBEAT": "soon"},
            "environment variable VCNODE_HEARTBEAT",
        ),
        ({"roles": "volunteer"}, {"VCNODE_HEARTBEAT": "0"}, "must be greater than 0"),
        ({"roles": "volunteer"}, {"VCNODE_MDNS": "maybe"}, "environment variable VCNODE_MDNS"),
        (
            {"roles": "volunteer"},
            {"VCNODE_MAX_CPUS": "two"},
            "environment variable VCNODE_MAX_CPUS",
        ),
        ({"roles": "volunteer", "listen": "nowhere"}, {}, "flag --listen: .*must be HOST:PORT"),
        ({"roles": "volunteer"}, {"VCNODE_COORDINATOR": "h:99999"}, "VCNODE_COORDINATOR"),
        ({"roles": "volunteer", "limits.max_cpus": "-1"}, {}, "flag --max-cpus: must be 0 or more"),
        ({"roles": "volunteer", "cluster": "a b"}, {}, "flag --cluster"),
        ({"roles": "volunteer", "log_level": "loud"}, {}, "flag --log-level"),
        (
            {"roles": "volunteer", "limits.max_concurrent_tasks": "100"},
            {},
            "flag --max-concurrent-tasks: at most 64 tasks at once",
        ),
        ({"roles": "volunteer", "advertise": "0.0.0.0"}, {}, "flag --advertise: expected HOST"),
    ],
)
def test_bad_values_name_their_source(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(flags, environ)


def test_a_bad_value_in_the_file_names_the_file_and_key(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "node.toml", 'role = "volunteer"\n[limits]\nallow_network = "perhaps"\n'
    )
    with pytest.raises(ConfigError) as caught:
        resolve({}, {}, file)
    assert str(caught.value).startswith(f"{file} (limits.allow_network): expected true or false")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("roles = [", "is not valid TOML"),
        ('colour = "blue"', "unknown key 'colour'"),
        ('role = "volunteer"\n[limits]\nmax_gpus = 1\n', "unknown key 'limits.max_gpus'"),
    ],
)
def test_bad_config_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    file = _write(tmp_path / "node.toml", text)
    with pytest.raises(ConfigError, match=message) as caught:
        resolve({}, {}, file)
    assert f"config file {file}" in str(caught.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        resolve({"roles": "volunteer"}, {}, missing)
    assert str(missing) in str(caught.value)


def test_limits_come_from_the_limits_table_and_environment(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "node.toml",
        'role = "volunteer"\n[limits]\nmax_cpus = 2\nmax_memory_mb = 4096\nallow_network = true\n',
    )
    config, sources = resolve({}, {"VCNODE_MAX_CONCURRENT_TASKS": "3"}, file)
    assert config.limits == OwnerLimits(
        max_cpus=2, max_memory_mb=4096, max_concurrent_tasks=3, allow_network=True
    )
    assert sources["limits.max_cpus"] == f"{file} (limits.max_cpus)"
    assert sources["limits.max_concurrent_tasks"] == (
        "environment variable VCNODE_MAX_CONCURRENT_TASKS"
    )


@pytest.mark.parametrize(
    ("roles", "listen"),
    [
        ("volunteer", "0.0.0.0:0"),
        ("manager", "0.0.0.0:7451"),
        ("coordinator", "0.0.0.0:7450"),
        ("manager,coordinator,volunteer", "0.0.0.0:7450"),
        ("volunteer,manager", "0.0.0.0:7451"),
    ],
)
def test_default_listen_follows_the_roles(roles: str, listen: str) -> None:
    config, sources = resolve({"roles": roles}, {})
    assert default_listen(config.roles) == listen
    assert config.listen == listen
    assert sources["listen"] == "default"


def test_rendered_config_is_toml_that_round_trips(tmp_path: Path) -> None:
    config, sources = resolve(
        {
            "roles": "coordinator,manager",
            "data_dir": str(tmp_path / 'odd "dir" \\ here'),
            "coordinator": "10.0.0.5:7450",
            "mdns_interfaces": "10.0.0.1,10.0.0.2",
        },
        {"VCNODE_HEARTBEAT": "2.5", "VCNODE_ALLOW_NETWORK": "yes"},
    )
    text = render(config, sources)
    document = tomllib.loads(text)
    assert document["roles"] == ["coordinator", "manager"]
    assert document["data_dir"] == str(config.data_dir)
    assert document["heartbeat_seconds"] == 2.5
    assert document["limits"]["allow_network"] is True
    assert "# environment variable VCNODE_HEARTBEAT" in text
    again, _ = resolve({}, {}, _write(tmp_path / "again.toml", text))
    assert again == config


def test_rendered_strings_with_control_characters_stay_valid_toml(tmp_path: Path) -> None:
    odd = tmp_path / 'new\nline "quoted"'
    config, sources = resolve({"roles": "volunteer", "data_dir": str(odd)}, {})
    assert tomllib.loads(render(config, sources))["data_dir"] == str(odd)


def test_a_fractional_limit_is_refused_not_truncated(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('role = "volunteer"\n[limits]\nmax_cpus = 2.5\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="max_cpus"):
        resolve({}, {}, file)
