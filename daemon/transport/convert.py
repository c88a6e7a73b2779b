"""protobuf <-> dataclass conversions; no other layer sees a protobuf message."""

from __future__ import annotations

from daemon.discovery.peers import Peer
from daemon.models import (
    CopyStatus,
    EventKind,
    FileRef,
    InlineBlob,
    Load,
    OwnerLimits,
    ReasonGroup,
    Registration,
    ResourceRequest,
    Resources,
    Submitted,
    TaskEvent,
    TaskExplanation,
    TaskResult,
    TaskSpec,
    TaskStatusRow,
    TrustRecord,
    Verdict,
    Volunteer,
    VolunteerState,
    WorkflowCounts,
    WorkflowStatus,
    WorkflowUpdate,
)
from daemon.rpc.v1 import common_pb2, coordinator_pb2, manager_pb2, node_pb2
from daemon.runtime.spec import LogChunk


def resources_to_proto(resources: Resources) -> common_pb2.Resources:
    return common_pb2.Resources(
        cpu_cores=resources.cpu_cores,
        memory_mb=resources.memory_mb,
        disk_free_mb=resources.disk_free_mb,
        gpus=resources.gpus,
        docker_available=resources.docker_available,
        images=list(resources.images),
    )


def resources_from_proto(message: common_pb2.Resources) -> Resources:
    return Resources(
        cpu_cores=message.cpu_cores,
        memory_mb=message.memory_mb,
        disk_free_mb=message.disk_free_mb,
        gpus=message.gpus,
        docker_available=message.docker_available,
        images=tuple(message.images),
    )


def limits_to_proto(limits: OwnerLimits) -> common_pb2.OwnerLimits:
    return common_pb2.OwnerLimits(
        max_cpus=limits.max_cpus,
        max_memory_mb=limits.max_memory_mb,
        max_disk_mb=limits.max_disk_mb,
        max_concurrent_tasks=limits.max_concurrent_tasks,
        allow_network=limits.allow_network,
        allow_process_runtime=limits.allow_process_runtime,
        allow_pull=limits.allow_pull,
        allow_managers=limits.allow_managers,
        allow_images=limits.allow_images,
        allow_users=limits.allow_users,
        cpu_throttle_percent=limits.cpu_throttle_percent,
    )


def limits_from_proto(message: common_pb2.OwnerLimits) -> OwnerLimits:
    return OwnerLimits(
        max_cpus=message.max_cpus,
        max_memory_mb=message.max_memory_mb,
        max_disk_mb=message.max_disk_mb,
        max_concurrent_tasks=message.max_concurrent_tasks,
        allow_network=message.allow_network,
        allow_process_runtime=message.allow_process_runtime,
        allow_pull=message.allow_pull,
        allow_managers=tuple(message.allow_managers),
        allow_images=tuple(message.allow_images),
        allow_users=tuple(message.allow_users),
        # Whatever a peer says: 0-100 is all that means anything.
        cpu_throttle_percent=min(100, max(0, message.cpu_throttle_percent)),
    )


def load_to_proto(load: Load) -> common_pb2.Load:
    return common_pb2.Load(
        cpu_percent=load.cpu_percent,
        memory_percent=load.memory_percent,
        running_tasks=load.running_tasks,
        unavailable=load.unavailable,
        unavailable_until=load.unavailable_until,
    )


def load_from_proto(message: common_pb2.Load) -> Load:
    return Load(
        cpu_percent=message.cpu_percent,
        memory_percent=message.memory_percent,
        running_tasks=message.running_tasks,
        unavailable=message.unavailable,
        unavailable_until=message.unavailable_until,
    )


def registration_to_proto(registration: Registration) -> coordinator_pb2.Register:
    return coordinator_pb2.Register(
        volunteer_id=registration.volunteer_id,
        hostname=registration.hostname,
        cluster=registration.cluster,
        protocol_version=registration.protocol_version,
        version=registration.version,
        resources=resources_to_proto(registration.resources),
        limits=limits_to_proto(registration.limits),
        running_task_ids=list(registration.running_task_ids),
    )


def registration_from_proto(message: coordinator_pb2.Register) -> Registration:
    return Registration(
        volunteer_id=message.volunteer_id,
        hostname=message.hostname,
        cluster=message.cluster,
        protocol_version=message.protocol_version,
        version=message.version,
        resources=resources_from_proto(message.resources),
        limits=limits_from_proto(message.limits),
        running_task_ids=tuple(message.running_task_ids),
    )


def volunteer_to_proto(volunteer: Volunteer) -> coordinator_pb2.VolunteerInfo:
    return coordinator_pb2.VolunteerInfo(
        volunteer_id=volunteer.volunteer_id,
        hostname=volunteer.hostname,
        state=volunteer.state.value,
        resources=resources_to_proto(volunteer.resources),
        limits=limits_to_proto(volunteer.limits),
        load=load_to_proto(volunteer.load),
        last_seen=volunteer.last_seen,
        first_seen=volunteer.first_seen,
        version=volunteer.version,
        connected=volunteer.connected,
        trust=trust_record_to_proto(volunteer.trust),
        owner=volunteer.owner,
    )


def trust_record_to_proto(record: TrustRecord) -> common_pb2.TrustRecord:
    return common_pb2.TrustRecord(
        agreed=record.agreed,
        disagreed=record.disagreed,
        streak=record.streak,
        vouched=record.vouched,
        last_disagreement_at=record.last_disagreement_at,
        last_disagreement_task=record.last_disagreement_task,
        blocklisted=record.blocklisted,
        blocklist_reason=record.blocklist_reason,
    )


def trust_record_from_proto(message: common_pb2.TrustRecord) -> TrustRecord:
    return TrustRecord(
        agreed=message.agreed,
        disagreed=message.disagreed,
        streak=message.streak,
        vouched=message.vouched,
        last_disagreement_at=message.last_disagreement_at,
        last_disagreement_task=message.last_disagreement_task,
        blocklisted=message.blocklisted,
        blocklist_reason=message.blocklist_reason,
    )


def verdict_to_proto(verdict: Verdict) -> coordinator_pb2.Verdict:
    return coordinator_pb2.Verdict(
        task_id=verdict.task_id,
        attempt=verdict.attempt,
        volunteer_id=verdict.volunteer_id,
        agreed=verdict.agreed,
        unchecked=not verdict.checked,
    )


def verdict_from_proto(message: coordinator_pb2.Verdict) -> Verdict:
    return Verdict(
        message.task_id,
        message.attempt,
        message.volunteer_id,
        message.agreed,
        checked=not message.unchecked,
    )


def volunteer_from_proto(message: coordinator_pb2.VolunteerInfo) -> Volunteer:
    return Volunteer(
        volunteer_id=message.volunteer_id,
        hostname=message.hostname,
        version=message.version,
        resources=resources_from_proto(message.resources),
        limits=limits_from_proto(message.limits),
        state=VolunteerState(message.state),
        first_seen=message.first_seen,
        last_seen=message.last_seen,
        load=load_from_proto(message.load),
        connected=message.connected,
        trust=trust_record_from_proto(message.trust),
        owner=message.owner,
    )


def peer_to_proto(peer: Peer) -> node_pb2.Peer:
    return node_pb2.Peer(
        node_id=peer.node_id,
        roles=list(peer.roles),
        cluster=peer.cluster,
        protocol_version=peer.protocol_version,
        host=peer.host,
        port=peer.port,
        version=peer.version,
        last_seen=peer.last_seen,
        skipped_reason=peer.skipped_reason,
        service_name=peer.service_name,
    )


def peer_from_proto(message: node_pb2.Peer) -> Peer:
    return Peer(
        service_name=message.service_name,
        node_id=message.node_id,
        roles=tuple(message.roles),
        cluster=message.cluster,
        protocol_version=message.protocol_version,
        host=message.host,
        port=message.port,
        version=message.version,
        last_seen=message.last_seen,
        skipped_reason=message.skipped_reason,
    )


def file_ref_to_proto(ref: FileRef) -> common_pb2.FileRef:
    return common_pb2.FileRef(name=ref.name, sha256=ref.sha256, size=ref.size)


def file_ref_from_proto(message: common_pb2.FileRef) -> FileRef:
    return FileRef(name=message.name, sha256=message.sha256, size=message.size)


def inline_blob_to_proto(blob: InlineBlob) -> common_pb2.InlineBlob:
    return common_pb2.InlineBlob(sha256=blob.sha256, content=blob.content)


def inline_blob_from_proto(message: common_pb2.InlineBlob) -> InlineBlob:
    return InlineBlob(sha256=message.sha256, content=message.content)


def task_spec_to_proto(spec: TaskSpec) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        task_id=spec.task_id,
        workflow_id=spec.workflow_id,
        image=spec.image,
        command=list(spec.command),
        resources=common_pb2.ResourceRequest(
            cpus=spec.resources.cpus,
            memory_mb=spec.resources.memory_mb,
            disk_mb=spec.resources.disk_mb,
            gpus=spec.resources.gpus,
        ),
        timeout_seconds=spec.timeout_seconds,
        inputs=[file_ref_to_proto(ref) for ref in spec.inputs],
        outputs=list(spec.outputs),
        network=spec.network,
        manager_address=spec.manager_address,
        manager_id=spec.manager_id,
        attempt=spec.attempt,
        retries=spec.retries,
        image_id=spec.image_id,
        image_from_manager=spec.image_from_manager,
        run=spec.run,
        inline_inputs=[inline_blob_to_proto(blob) for blob in spec.inline_inputs],
        replica_of=spec.replica_of,
        avoid_volunteers=list(spec.avoid_volunteers),
        user=spec.user,
    )


def task_spec_from_proto(message: common_pb2.TaskSpec) -> TaskSpec:
    return TaskSpec(
        task_id=message.task_id,
        workflow_id=message.workflow_id,
        image=message.image,
        command=tuple(message.command),
        resources=ResourceRequest(
            cpus=message.resources.cpus,
            memory_mb=message.resources.memory_mb,
            disk_mb=message.resources.disk_mb,
            gpus=message.resources.gpus,
        ),
        timeout_seconds=message.timeout_seconds,
        inputs=tuple(file_ref_from_proto(ref) for ref in message.inputs),
        outputs=tuple(message.outputs),
        network=message.network,
        manager_address=message.manager_address,
        manager_id=message.manager_id,
        attempt=message.attempt,
        retries=message.retries,
        image_id=message.image_id,
        image_from_manager=message.image_from_manager,
        run=message.run,
        inline_inputs=tuple(inline_blob_from_proto(blob) for blob in message.inline_inputs),
        replica_of=message.replica_of,
        avoid_volunteers=tuple(message.avoid_volunteers),
        user=message.user,
    )


def task_result_to_proto(result: TaskResult) -> common_pb2.TaskResult:
    return common_pb2.TaskResult(
        task_id=result.task_id,
        attempt=result.attempt,
        exit_code=result.exit_code,
        error=result.error,
        outputs=[file_ref_to_proto(ref) for ref in result.outputs],
        started_at=result.started_at,
        finished_at=result.finished_at,
        stdout_tail=result.stdout_tail,
        stderr_tail=result.stderr_tail,
        inline_outputs=[inline_blob_to_proto(blob) for blob in result.inline_outputs],
        logs=[file_ref_to_proto(ref) for ref in result.logs],
        log_note=result.log_note,
    )


def task_result_from_proto(message: common_pb2.TaskResult) -> TaskResult:
    return TaskResult(
        task_id=message.task_id,
        attempt=message.attempt,
        exit_code=message.exit_code,
        error=message.error,
        outputs=tuple(file_ref_from_proto(ref) for ref in message.outputs),
        started_at=message.started_at,
        finished_at=message.finished_at,
        stdout_tail=message.stdout_tail,
        stderr_tail=message.stderr_tail,
        inline_outputs=tuple(inline_blob_from_proto(blob) for blob in message.inline_outputs),
        logs=tuple(file_ref_from_proto(ref) for ref in message.logs),
        log_note=message.log_note,
    )


def task_event_to_proto(event: TaskEvent) -> coordinator_pb2.TaskEvent:
    message = coordinator_pb2.TaskEvent(
        task_id=event.task_id,
        workflow_id=event.workflow_id,
        kind=event.kind,
        attempt=event.attempt,
        volunteer_id=event.volunteer_id,
        message=event.message,
        percent=event.percent,
        at=event.at,
        sequence=event.sequence,
    )
    if event.result is not None:
        message.result.CopyFrom(task_result_to_proto(event.result))
    if event.trust is not None:
        message.trust.CopyFrom(trust_record_to_proto(event.trust))
    return message


def task_event_from_proto(message: coordinator_pb2.TaskEvent) -> TaskEvent:
    """ValueError for a kind this version does not know (a newer coordinator's)."""
    return TaskEvent(
        task_id=message.task_id,
        workflow_id=message.workflow_id,
        kind=EventKind(message.kind),
        at=message.at,
        attempt=message.attempt,
        volunteer_id=message.volunteer_id,
        message=message.message,
        percent=message.percent,
        result=task_result_from_proto(message.result) if message.HasField("result") else None,
        sequence=message.sequence,
        trust=trust_record_from_proto(message.trust) if message.HasField("trust") else None,
    )


# --- what the coordinator says on a volunteer's session ----------------------------------


def offer_to_proto(spec: TaskSpec) -> coordinator_pb2.CoordinatorMessage:
    return coordinator_pb2.CoordinatorMessage(
        offer=coordinator_pb2.TaskOffer(task=task_spec_to_proto(spec))
    )


def cancel_to_proto(task_id: str, reason: str) -> coordinator_pb2.CoordinatorMessage:
    return coordinator_pb2.CoordinatorMessage(
        cancel=coordinator_pb2.CancelTask(task_id=task_id, reason=reason)
    )


def trust_to_proto(record: TrustRecord) -> coordinator_pb2.CoordinatorMessage:
    return coordinator_pb2.CoordinatorMessage(trust=trust_record_to_proto(record))


def result_ack_to_proto(task_id: str, attempt: int) -> coordinator_pb2.CoordinatorMessage:
    return coordinator_pb2.CoordinatorMessage(
        result_ack=coordinator_pb2.TaskResultAck(task_id=task_id, attempt=attempt)
    )


# --- workflows: the manager and its clients ----------------------------------------------


def inline_file_to_proto(ref: FileRef, content: bytes) -> manager_pb2.InlineFile:
    return manager_pb2.InlineFile(ref=file_ref_to_proto(ref), content=content)


def inline_file_from_proto(message: manager_pb2.InlineFile) -> tuple[FileRef, bytes]:
    return file_ref_from_proto(message.ref), message.content


def submitted_to_proto(submitted: Submitted) -> manager_pb2.SubmitWorkflowReply:
    return manager_pb2.SubmitWorkflowReply(
        workflow_id=submitted.workflow_id,
        task_count=submitted.task_count,
        estimated_seconds_per_task=submitted.estimated_seconds_per_task,
    )


def submitted_from_proto(message: manager_pb2.SubmitWorkflowReply) -> Submitted:
    return Submitted(
        workflow_id=message.workflow_id,
        task_count=message.task_count,
        estimated_seconds_per_task=message.estimated_seconds_per_task,
    )


def workflow_counts_to_proto(counts: WorkflowCounts) -> manager_pb2.WorkflowCounts:
    return manager_pb2.WorkflowCounts(
        queued=counts.queued,
        running=counts.running,
        completed=counts.completed,
        failed=counts.failed,
        cancelled=counts.cancelled,
        total=counts.total,
        skipped=counts.skipped,
        fetching=counts.fetching,
    )


def workflow_counts_from_proto(message: manager_pb2.WorkflowCounts) -> WorkflowCounts:
    return WorkflowCounts(
        queued=message.queued,
        running=message.running,
        completed=message.completed,
        failed=message.failed,
        cancelled=message.cancelled,
        total=message.total,
        skipped=message.skipped,
        fetching=message.fetching,
    )


def task_status_row_to_proto(task: TaskStatusRow) -> manager_pb2.TaskStatus:
    return manager_pb2.TaskStatus(
        task_id=task.task_id,
        name=task.name,
        state=task.state,
        attempts=task.attempts,
        error=task.error,
        volunteer_id=task.volunteer_id,
        copies=task.copies,
        agreeing=task.agreeing,
        validation=task.validation,
        copy_details=[copy_status_to_proto(copy) for copy in task.copy_details],
    )


def copy_status_to_proto(copy: CopyStatus) -> manager_pb2.CopyStatus:
    return manager_pb2.CopyStatus(
        number=copy.number,
        task_id=copy.task_id,
        state=copy.state,
        volunteer_id=copy.volunteer_id,
        attempt=copy.attempt,
        verdict=copy.verdict,
        outputs=[file_ref_to_proto(ref) for ref in copy.outputs],
        run_seconds=copy.run_seconds,
        error=copy.error,
    )


def copy_status_from_proto(message: manager_pb2.CopyStatus) -> CopyStatus:
    return CopyStatus(
        number=message.number,
        task_id=message.task_id,
        state=message.state,
        volunteer_id=message.volunteer_id,
        attempt=message.attempt,
        verdict=message.verdict,
        outputs=tuple(file_ref_from_proto(ref) for ref in message.outputs),
        run_seconds=message.run_seconds,
        error=message.error,
    )


def task_status_row_from_proto(message: manager_pb2.TaskStatus) -> TaskStatusRow:
    return TaskStatusRow(
        task_id=message.task_id,
        name=message.name,
        state=message.state,
        attempts=message.attempts,
        error=message.error,
        volunteer_id=message.volunteer_id,
        copies=message.copies,
        agreeing=message.agreeing,
        validation=message.validation,
        copy_details=tuple(copy_status_from_proto(copy) for copy in message.copy_details),
    )


def workflow_status_to_proto(status: WorkflowStatus) -> manager_pb2.WorkflowStatus:
    return manager_pb2.WorkflowStatus(
        workflow_id=status.workflow_id,
        name=status.name,
        type=status.type,
        state=status.state,
        counts=workflow_counts_to_proto(status.counts),
        tasks=[task_status_row_to_proto(task) for task in status.tasks],
        created_at=status.created_at,
        updated_at=status.updated_at,
        error=status.error,
        owner=status.owner,
        extra_copies=status.extra_copies,
        extra_run_seconds=status.extra_run_seconds,
        run_seconds=status.run_seconds,
    )


def workflow_status_from_proto(message: manager_pb2.WorkflowStatus) -> WorkflowStatus:
    return WorkflowStatus(
        workflow_id=message.workflow_id,
        name=message.name,
        type=message.type,
        state=message.state,
        created_at=message.created_at,
        updated_at=message.updated_at,
        counts=workflow_counts_from_proto(message.counts),
        tasks=tuple(task_status_row_from_proto(task) for task in message.tasks),
        error=message.error,
        owner=message.owner,
        extra_copies=message.extra_copies,
        extra_run_seconds=message.extra_run_seconds,
        run_seconds=message.run_seconds,
    )


def log_push_to_proto(
    task_id: str, attempt: int, chunks: tuple[LogChunk, ...], final: bool
) -> manager_pb2.PushTaskLogRequest:
    return manager_pb2.PushTaskLogRequest(
        task_id=task_id,
        attempt=attempt,
        chunks=[
            manager_pb2.LogChunk(stream=chunk.stream, offset=chunk.offset, data=chunk.data)
            for chunk in chunks
        ],
        final=final,
    )


def log_chunks_from_proto(message: manager_pb2.PushTaskLogRequest) -> tuple[LogChunk, ...]:
    return tuple(LogChunk(chunk.stream, chunk.offset, chunk.data) for chunk in message.chunks)


def explanation_to_proto(explanation: TaskExplanation) -> manager_pb2.TaskExplanation:
    return manager_pb2.TaskExplanation(
        task_id=explanation.task_id,
        name=explanation.name,
        state=explanation.state,
        message=explanation.message,
        groups=[
            manager_pb2.ReasonGroup(reason=group.reason, volunteer_ids=group.volunteer_ids)
            for group in explanation.groups
        ],
    )


def explanation_from_proto(message: manager_pb2.TaskExplanation) -> TaskExplanation:
    return TaskExplanation(
        task_id=message.task_id,
        name=message.name,
        state=message.state,
        message=message.message,
        groups=tuple(
            ReasonGroup(group.reason, tuple(group.volunteer_ids)) for group in message.groups
        ),
    )


def workflow_update_to_proto(update: WorkflowUpdate) -> manager_pb2.WorkflowEvent:
    return manager_pb2.WorkflowEvent(
        workflow_id=update.workflow_id,
        task_id=update.task_id,
        kind=update.kind,
        message=update.message,
        at=update.at,
        counts=workflow_counts_to_proto(update.counts),
    )


def workflow_update_from_proto(message: manager_pb2.WorkflowEvent) -> WorkflowUpdate:
    return WorkflowUpdate(
        workflow_id=message.workflow_id,
        task_id=message.task_id,
        kind=message.kind,
        message=message.message,
        at=message.at,
        counts=workflow_counts_from_proto(message.counts),
    )
