"""Typed records shared by the layers: transport converts protobuf to these, stores persist them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class OwnerLimits:
    """What a volunteer's owner lets the pool use; 0 means no cap beyond the machine."""

    max_cpus: int = 0
    max_memory_mb: int = 0
    max_disk_mb: int = 0
    max_concurrent_tasks: int = 1
    allow_network: bool = False
    allow_process_runtime: bool = False


@dataclass(frozen=True)
class Resources:
    cpu_cores: int
    memory_mb: int
    disk_free_mb: int
    gpus: int = 0
    docker_available: bool = False
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class Load:
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    running_tasks: int = 0


@dataclass(frozen=True)
class Registration:
    """What a volunteer says about itself when its session opens."""

    volunteer_id: str
    hostname: str
    cluster: str
    protocol_version: int
    version: str
    resources: Resources
    limits: OwnerLimits
    running_task_ids: tuple[str, ...] = ()


class VolunteerState(StrEnum):
    ONLINE = "online"
    LOST = "lost"


@dataclass(frozen=True)
class Volunteer:
    """The coordinator's view of one volunteer."""

    volunteer_id: str
    hostname: str
    version: str
    resources: Resources
    limits: OwnerLimits
    state: VolunteerState
    first_seen: float
    last_seen: float
    load: Load = field(default_factory=Load)
    connected: bool = False


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    hostname: str
    roles: tuple[str, ...]
    cluster: str
    version: str
    protocol_version: int
