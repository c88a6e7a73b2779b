"""protobuf <-> dataclass conversions; no other layer sees a protobuf message."""

from __future__ import annotations

from daemon.discovery.peers import Peer
from daemon.models import (
    Load,
    OwnerLimits,
    Registration,
    Resources,
    Volunteer,
    VolunteerState,
)
from daemon.rpc.v1 import common_pb2, coordinator_pb2, node_pb2


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
    )


def limits_from_proto(message: common_pb2.OwnerLimits) -> OwnerLimits:
    return OwnerLimits(
        max_cpus=message.max_cpus,
        max_memory_mb=message.max_memory_mb,
        max_disk_mb=message.max_disk_mb,
        max_concurrent_tasks=message.max_concurrent_tasks,
        allow_network=message.allow_network,
        allow_process_runtime=message.allow_process_runtime,
    )


def load_to_proto(load: Load) -> common_pb2.Load:
    return common_pb2.Load(
        cpu_percent=load.cpu_percent,
        memory_percent=load.memory_percent,
        running_tasks=load.running_tasks,
    )


def load_from_proto(message: common_pb2.Load) -> Load:
    return Load(
        cpu_percent=message.cpu_percent,
        memory_percent=message.memory_percent,
        running_tasks=message.running_tasks,
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
