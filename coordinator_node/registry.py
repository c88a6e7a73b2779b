"""The volunteer registry as a pure state machine: stimuli in, changed records out.

No I/O and no clock: every call takes `now`, and every call that changes a volunteer returns
the new record so the shell can persist it. A volunteer is `lost` once `missed_heartbeats`
intervals pass without a word from it, whether its stream is still open (hung host) or not
(killed host), and `left` when it said goodbye; it becomes `online` again, under the same
id, when it talks again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from daemon.models import Load, OwnerLimits, Registration, Volunteer, VolunteerState


@dataclass(frozen=True)
class SessionToken:
    """Identifies one stream of one volunteer; a reconnect makes older tokens stale."""

    volunteer_id: str
    generation: int


def registration_problem(
    registration: Registration, cluster: str, protocol_version: int
) -> str | None:
    """Why this coordinator must refuse the volunteer, or None if it may join."""
    if registration.cluster != cluster:
        return (
            f"volunteer is in cluster {registration.cluster!r} but this coordinator serves "
            f"cluster {cluster!r}; start the volunteer with --cluster {cluster}"
        )
    if registration.protocol_version != protocol_version:
        return (
            f"volunteer speaks protocol version {registration.protocol_version} but this "
            f"coordinator speaks version {protocol_version}; upgrade the older of the two"
        )
    if not registration.volunteer_id:
        return "volunteer sent an empty volunteer_id"
    return None


# How long a volunteer that is gone (lost or left) stays listed before it is forgotten.
RETENTION_SECONDS = 7 * 24 * 3600


class VolunteerRegistry:
    def __init__(
        self,
        heartbeat_seconds: float,
        missed_heartbeats: int = 3,
        retention_seconds: float = RETENTION_SECONDS,
    ) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self.missed_heartbeats = missed_heartbeats
        self.retention_seconds = retention_seconds
        self._volunteers: dict[str, Volunteer] = {}
        self._generations: dict[str, int] = {}
        # When each online volunteer was last heard from, for expiry; restored volunteers
        # count from the restore so a restarted coordinator gives them time to reconnect.
        self._heard_at: dict[str, float] = {}

    @property
    def lost_after_seconds(self) -> float:
        return self.heartbeat_seconds * self.missed_heartbeats

    def restore(self, volunteers: Iterable[Volunteer], now: float) -> None:
        for volunteer in volunteers:
            self._volunteers[volunteer.volunteer_id] = replace(volunteer, connected=False)
            if volunteer.state is VolunteerState.ONLINE:
                self._heard_at[volunteer.volunteer_id] = now

    def connect(self, registration: Registration, now: float) -> tuple[SessionToken, Volunteer]:
        vid = registration.volunteer_id
        generation = self._generations.get(vid, 0) + 1
        self._generations[vid] = generation
        previous = self._volunteers.get(vid)
        volunteer = Volunteer(
            volunteer_id=vid,
            hostname=registration.hostname,
            version=registration.version,
            resources=registration.resources,
            limits=registration.limits,
            state=VolunteerState.ONLINE,
            first_seen=previous.first_seen if previous else now,
            last_seen=now,
            load=Load(running_tasks=len(registration.running_task_ids)),
            connected=True,
            owner=registration.owner,
        )
        self._volunteers[vid] = volunteer
        self._heard_at[vid] = now
        return SessionToken(vid, generation), volunteer

    def is_current(self, token: SessionToken) -> bool:
        return self._generations.get(token.volunteer_id) == token.generation

    def heartbeat(
        self, token: SessionToken, load: Load, now: float, limits: OwnerLimits | None = None
    ) -> Volunteer | None:
        """Returns the updated record, or None if the token belongs to a replaced session.
        `limits`: the owner changed them since the session began."""
        if not self.is_current(token):
            return None
        known = self._volunteers[token.volunteer_id]
        volunteer = replace(
            known,
            limits=limits if limits is not None else known.limits,
            load=load,
            last_seen=now,
            state=VolunteerState.ONLINE,
            connected=True,
        )
        self._volunteers[token.volunteer_id] = volunteer
        self._heard_at[token.volunteer_id] = now
        return volunteer

    def disconnect(self, token: SessionToken, now: float) -> Volunteer | None:
        """The stream closed. The volunteer keeps its state until expiry decides."""
        if not self.is_current(token):
            return None
        volunteer = replace(self._volunteers[token.volunteer_id], connected=False)
        self._volunteers[token.volunteer_id] = volunteer
        return volunteer

    def depart(self, token: SessionToken) -> Volunteer | None:
        """The volunteer said goodbye: `left`, and no longer expected to heartbeat."""
        if not self.is_current(token):
            return None
        self._heard_at.pop(token.volunteer_id, None)
        volunteer = replace(
            self._volunteers[token.volunteer_id], state=VolunteerState.LEFT, connected=False
        )
        self._volunteers[token.volunteer_id] = volunteer
        return volunteer

    def expire(self, now: float) -> list[Volunteer]:
        """Marks `lost` every online volunteer not heard from in time; returns those."""
        newly_lost = []
        for vid, heard_at in list(self._heard_at.items()):
            if now - heard_at < self.lost_after_seconds:
                continue
            del self._heard_at[vid]
            volunteer = replace(self._volunteers[vid], state=VolunteerState.LOST)
            self._volunteers[vid] = volunteer
            newly_lost.append(volunteer)
        return newly_lost

    def forget_gone(self, now: float) -> list[str]:
        """Forgets every volunteer gone (lost or left, not connected) for longer than the
        retention; returns their ids. The registry holds the pool, not its whole history."""
        gone = [
            vid
            for vid, volunteer in self._volunteers.items()
            if volunteer.state is not VolunteerState.ONLINE
            and not volunteer.connected
            and now - volunteer.last_seen > self.retention_seconds
        ]
        for vid in gone:
            del self._volunteers[vid]
            self._generations.pop(vid, None)
        return gone

    def get(self, volunteer_id: str) -> Volunteer | None:
        return self._volunteers.get(volunteer_id)

    def volunteers(self) -> list[Volunteer]:
        return sorted(self._volunteers.values(), key=lambda v: (v.hostname, v.volunteer_id))
