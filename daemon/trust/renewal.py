"""Certificates renewed before they expire, while the node runs.

Once a certificate is in the last third of its life, a coordinator issues itself (and its
admin credential) a new one from its own CA; any other node asks its coordinator, over mTLS
with the certificate it still holds, for one with the same identity and a new key. The new
credential is saved in the data dir, then served and presented from the next connection on.
A node that asks makes its key in a child process (daemon/trust/keywork.py), as at its join.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from daemon.errors import NodeError
from daemon.rpc.v1 import trust_pb2, trust_pb2_grpc
from daemon.transport.channels import open_channel
from daemon.trust import pki
from daemon.trust.authority import ClusterAuthority
from daemon.trust.credentials import ADMIN, NODE, Credential, LiveCredential, tls_dir
from daemon.trust.keywork import KeyWorker

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 3600.0
RENEW_TIMEOUT_SECONDS = 30.0


async def renewed_by_coordinator(credential: Credential, coordinator: str) -> Credential:
    """A new credential for the same identity, from the coordinator at `coordinator`."""
    async with KeyWorker() as keys:
        key, request = await keys.new_request(credential.identity.node_id)
        async with open_channel(coordinator, credential, pki.role_name("coordinator")) as channel:
            reply = await trust_pb2_grpc.TrustServiceStub(channel).Renew(
                trust_pb2.RenewRequest(certificate_request=request),
                timeout=RENEW_TIMEOUT_SECONDS,
            )
        facts = await keys.accept(credential.ca_pem, reply.certificate, key)
    renewed = Credential(credential.ca_pem, key, reply.certificate, facts)
    if renewed.identity != credential.identity:
        raise ValueError("the renewed certificate names someone else")
    return renewed


class Renewal:
    """Keeps a node's certificate (and a coordinator's admin credential) from expiring."""

    def __init__(
        self,
        live: LiveCredential,
        data_dir: Path,
        authority: ClusterAuthority | None,
        find_coordinator: Callable[[], Awaitable[str]],
    ) -> None:
        self._live = live
        self._directory = tls_dir(data_dir)
        self._authority = authority
        self._find_coordinator = find_coordinator

    async def forever(self) -> None:
        while True:
            await self.renew_if_due()
            await asyncio.sleep(CHECK_EVERY_SECONDS)  # a period, not a wait for something

    async def renew_if_due(self) -> bool:
        """Renews what is due; True when the node's certificate was renewed."""
        if self._authority is not None:
            await asyncio.to_thread(self._renew_admin_if_due, self._authority)
        held = self._live.current
        if not held.due_for_renewal():
            return False
        try:
            renewed = await self._renewed(held)
        except (grpc.aio.AioRpcError, NodeError, ValueError, TimeoutError) as error:
            detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else error
            log.warning(
                "could not renew this node's certificate (it expires %s); trying again in "
                "%.0f min: %s",
                held.expires_at.isoformat(timespec="minutes"),
                CHECK_EVERY_SECONDS / 60,
                detail,
            )
            return False
        await asyncio.to_thread(renewed.save, self._directory, NODE)
        self._live.replace(renewed)
        log.info(
            "renewed this node's certificate; it now expires %s",
            renewed.expires_at.isoformat(timespec="minutes"),
        )
        return True

    async def _renewed(self, held: Credential) -> Credential:
        if self._authority is not None:
            return self._authority.credential(held.identity, held.lifetime)
        coordinator = await asyncio.wait_for(self._find_coordinator(), RENEW_TIMEOUT_SECONDS)
        return await renewed_by_coordinator(held, coordinator)

    def _renew_admin_if_due(self, authority: ClusterAuthority) -> None:
        admin = Credential.load(self._directory, ADMIN)
        if admin is not None and admin.due_for_renewal():
            authority.credential(admin.identity, admin.lifetime).save(self._directory, ADMIN)
