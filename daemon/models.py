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
    # Allow-lists; empty allows all. Managers by node id (the `<id>.id.vcnode` name of
    # their certificate, as the coordinator authenticated it). Images by fnmatch pattern on
    # the image reference, or a `sha256:` image ID (see daemon/capacity.py: allow_problem).
    allow_managers: tuple[str, ...] = ()
    allow_images: tuple[str, ...] = ()
    # Users by their certificate's user name, as the task's manager says it (TaskSpec.user).
    allow_users: tuple[str, ...] = ()
    # The share of each CPU a task's container may use, in percent (0: all of it): BOINC's
    # "use at most N% of CPU time", kept by Docker's CPU quota. The volunteer's own: the
    # coordinator matches on CPUs, not on their speed.
    cpu_throttle_percent: int = 0

    def __post_init__(self) -> None:
        # Stores read them back from JSON as lists: kept tuples, so limits stay hashable
        # and compare equal to what was saved.
        for name in ("allow_managers", "allow_images", "allow_users"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


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
    # Why it takes no task now, whatever the task ("" when it takes tasks): its owner
    # paused or drained it, or one of the owner's rules holds it; and until when (0: until
    # lifted).
    unavailable: str = ""
    unavailable_until: float = 0.0


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
    # What its certificate says, never what it sends: enrolled with a vouched token, and
    # the person who owns the machine (empty if none was named).
    vouched: bool = False
    owner: str = ""


@dataclass(frozen=True)
class TrustRecord:
    """A volunteer's results as checked against other volunteers' copies of the same tasks
    (see coordinator_node/trust.py for the rules)."""

    agreed: int = 0
    disagreed: int = 0
    # Agreements since the last disagreement.
    streak: int = 0
    # Enrolled with a vouched token and no disagreement since: trusted from the start.
    vouched: bool = False
    last_disagreement_at: float = 0.0
    last_disagreement_task: str = ""
    # The latest verdicts, oldest first, "a" agreed and "d" disagreed: repeated
    # disagreements among them blocklist the volunteer.
    recent: str = ""
    blocklisted: bool = False
    blocklist_reason: str = ""

    @property
    def on_probation(self) -> bool:
        """Not vouched for, and no result of its agreed with another's yet."""
        return not self.vouched and not self.agreed and not self.blocklisted

    def trusted(self, threshold: int) -> bool:
        """Whether one copy of a task it ran may stand alone (spot checks aside)."""
        return not self.blocklisted and (self.vouched or self.streak >= threshold)


@dataclass(frozen=True)
class Verdict:
    """What comparing a task's copies found of one volunteer's result."""

    task_id: str  # the copy's task id
    attempt: int
    volunteer_id: str
    agreed: bool
    # False: the result stood alone, unchecked; no verdict, only word that none is coming.
    checked: bool = True


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
    trust: TrustRecord = field(default_factory=TrustRecord)
    owner: str = ""


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
    # The manager's node id, as the coordinator knows it from its certificate.
    manager_id: str = ""
    # Validation by replication: the task this is a copy of (its own id for the first
    # copy; empty when the task is not replicated), and the volunteers that ran earlier
    # copies of it, which may not run this one.
    replica_of: str = ""
    avoid_volunteers: tuple[str, ...] = ()
    # Who submitted the workflow (their certificate's user name; empty when a node did),
    # as its manager says: volunteers' allow_users trust the manager for it.
    user: str = ""


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
    # What the task wrote, "stdout" and "stderr", delivered like outputs (`vcnode logs`),
    # and why they are not whole, if they are not.
    logs: tuple[FileRef, ...] = ()
    log_note: str = ""

    @property
    def succeeded(self) -> bool:
        return not self.error


class TaskState(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    # Accepted: its volunteer fetches its inputs (and image), or holds it fetched ahead
    # until a slot frees.
    FETCHING = "fetching"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)

    @property
    def held(self) -> bool:
        """Accepted by a volunteer and not ended: it counts against that volunteer's room,
        and a lease, a cancel or the volunteer's loss concerns it, fetching or running."""
        return self in (TaskState.FETCHING, TaskState.RUNNING)


class EventKind(StrEnum):
    """What happened to a task: the coordinator's scheduler says it, the manager's workflow
    state machine reads it, and the wire and the stores carry it as its value."""

    QUEUED = "queued"
    OFFERED = "offered"
    DECLINED = "declined"
    REQUEUED = "requeued"  # its volunteer was lost, or it failed with retries left
    UNSCHEDULABLE = "unschedulable"  # no online volunteer can hold it
    # Accepted: inputs and image on their way, or fetched ahead and waiting for a slot.
    # An older volunteer never says when its task starts: its acceptance is `running`.
    FETCHING = "fetching"
    RUNNING = "running"  # its container (or process) started
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
    # On `completed`: how the coordinator trusted the volunteer when its result arrived.
    trust: TrustRecord | None = None


# --- workflows, as the manager tells its clients ------------------------------------------


@dataclass(frozen=True)
class WorkflowCounts:
    """A workflow's tasks by state as its user sees them: the manager counts tasks waiting
    for their dependencies as queued; skipped ones (a dependency did not complete) apart."""

    queued: int = 0
    # Actually executing; `fetching`: held by a volunteer that fetches their inputs or
    # waits for a slot.
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0
    skipped: int = 0
    fetching: int = 0


@dataclass(frozen=True)
class CopyStatus:
    """One copy of a replicated task, as `node status WF --task T` lists it."""

    number: int
    task_id: str
    state: str
    volunteer_id: str = ""
    attempt: int = 0
    # agreed, disagreed, unchecked (it stood alone), or "" while undecided.
    verdict: str = ""
    outputs: tuple[FileRef, ...] = ()
    run_seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class TaskStatusRow:
    """One task in a workflow's status; `state` is the manager's word for it (waiting,
    queued, fetching, running, completed, failed, cancelled or skipped)."""

    task_id: str
    name: str
    state: str
    attempts: int = 0
    error: str = ""
    volunteer_id: str = ""
    # Validation by replication: copies run, those that agreed with the result that
    # stands, and how it was decided; the copies themselves when asked for one task.
    copies: int = 0
    agreeing: int = 0
    validation: str = ""
    copy_details: tuple[CopyStatus, ...] = ()


@dataclass(frozen=True)
class WorkflowStatus:
    """A workflow as its manager stores and reports it: `node status`, `node workflows`."""

    workflow_id: str
    name: str
    type: str
    # queued, running, merging, completed, failed or cancelled.
    state: str
    created_at: float
    updated_at: float
    counts: WorkflowCounts = field(default_factory=WorkflowCounts)
    tasks: tuple[TaskStatusRow, ...] = ()
    # Why the workflow failed, beyond its tasks (e.g. the merge step); empty otherwise.
    error: str = ""
    # Who submitted it (see daemon.transport.access.Caller.owner); empty before owners.
    owner: str = ""
    # What validation cost: copies beyond each task's first and their run time, against
    # the run time of every copy of the tasks validated.
    extra_copies: int = 0
    extra_run_seconds: float = 0.0
    run_seconds: float = 0.0


@dataclass(frozen=True)
class WorkflowUpdate:
    """Something that happened to a workflow, or to one of its tasks (then `task_id` says
    which), as the manager tells those watching it."""

    workflow_id: str
    task_id: str
    kind: str
    message: str
    at: float
    counts: WorkflowCounts = field(default_factory=WorkflowCounts)


@dataclass(frozen=True)
class ReasonGroup:
    """Volunteers that do not run a queued task for one same reason."""

    reason: str
    volunteer_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskExplanation:
    """Why a task is not running (`node status WF --why`)."""

    task_id: str
    name: str
    state: str
    # The task's own latest word (e.g. the coordinator's "unschedulable: ...").
    message: str = ""
    groups: tuple[ReasonGroup, ...] = ()


@dataclass(frozen=True)
class Submitted:
    """A workflow the manager accepted (or resumed) and how many tasks it runs."""

    workflow_id: str
    task_count: int
    # The splitter's estimate of one task's run time (0: none).
    estimated_seconds_per_task: float = 0.0
