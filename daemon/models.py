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
    # Pull a task's image from its registry when it is not here (network traffic the
    # owner pays for, so off unless asked).
    allow_pull: bool = False


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
    LOST = "lost"  # went silent
    LEFT = "left"  # said goodbye


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


# --- tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceRequest:
    cpus: float = 1.0
    memory_mb: int = 256
    disk_mb: int = 0
    gpus: int = 0


@dataclass(frozen=True)
class FileRef:
    """A file by content: its name in /input or /output, sha256 and size in bytes."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class InlineBlob:
    """A small file's bytes carried inside a task's offer or result (see daemon/inline.py);
    the FileRef naming it is checked against them."""

    sha256: str
    content: bytes


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    workflow_id: str
    image: str
    command: tuple[str, ...]
    resources: ResourceRequest
    timeout_seconds: int
    inputs: tuple[FileRef, ...] = ()
    outputs: tuple[str, ...] = ()
    network: bool = False
    manager_address: str = ""
    attempt: int = 0
    retries: int = 0
    image_id: str = ""
    # The manager can export the image for volunteers that lack it.
    image_from_manager: bool = False
    # Raised by `node submit --resume` for each task run again.
    run: int = 0
    # The bytes of some small inputs; the others come by TransferService.
    inline_inputs: tuple[InlineBlob, ...] = ()


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    attempt: int
    exit_code: int
    # Empty on success; otherwise why the task failed, in words a person can act on.
    error: str
    outputs: tuple[FileRef, ...] = ()
    started_at: float = 0.0
    finished_at: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    # The bytes of some small outputs; the others were uploaded to the manager.
    inline_outputs: tuple[InlineBlob, ...] = ()

    @property
    def succeeded(self) -> bool:
        return not self.error


class TaskState(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


class EventKind(StrEnum):
    """What happened to a task: the coordinator's scheduler says it, the manager's workflow
    state machine reads it, and the wire and the stores carry it as its value."""

    QUEUED = "queued"
    OFFERED = "offered"
    DECLINED = "declined"
    REQUEUED = "requeued"  # its volunteer was lost, or it failed with retries left
    UNSCHEDULABLE = "unschedulable"  # no online volunteer can hold it
    RUNNING = "running"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TaskEvent:
    """Something that happened to a task, as the coordinator tells its manager."""

    task_id: str
    workflow_id: str
    kind: EventKind
    at: float
    attempt: int = 0
    volunteer_id: str = ""
    message: str = ""
    percent: float = 0.0
    result: TaskResult | None = None
    sequence: int = 0
