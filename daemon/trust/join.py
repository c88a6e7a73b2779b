"""Joining a cluster with a token: trust nothing until the CA matches the token's hash.

The exchange runs on the coordinator's plaintext join port and needs no secrecy: the request
carries a CSR and an HMAC keyed with the token's secret digest (the secret itself never
travels), and the reply, a CA and a certificate, is accepted only if the CA has the hash the
token pins and the certificate was issued by it for our own key. A man in the middle can
at worst waste a use of the token. The key is made and the reply checked in a child process
(daemon/trust/keywork.py), so that the node does not keep `cryptography` in its memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from daemon.errors import AccessDeniedError, RejectedError, UnreachableError
from daemon.rpc.v1 import trust_pb2, trust_pb2_grpc
from daemon.transport.channels import open_join_channel
from daemon.trust.credentials import Credential
from daemon.trust.keywork import KeyWorker
from daemon.trust.tokens import JoinToken, proof

JOIN_TIMEOUT_SECONDS = 10.0


async def join_cluster(
    token: JoinToken,
    node_id: str,
    cluster: str | None,
    addresses: Sequence[str] = (),
) -> Credential:
    """A credential for `node_id` from the coordinator that made `token`, tried at
    `addresses` then at the token's own."""
    async with KeyWorker() as keys:
        key, request = await keys.new_request(node_id)
        message = trust_pb2.JoinRequest(
            token_id=token.token_id,
            certificate_request=request,
            proof=proof(token.key, request),
            node_id=node_id,
            cluster=cluster or "",
        )
        tried: list[str] = []
        refusals: list[str] = []
        for address in dict.fromkeys([*addresses, *token.addresses]):
            async with open_join_channel(address) as channel:
                try:
                    reply = await trust_pb2_grpc.TrustServiceStub(channel).Join(
                        message, timeout=JOIN_TIMEOUT_SECONDS
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                        # Maybe not ours (an address mDNS suggested): the next may be.
                        refusals.append(f"the coordinator at {address} refused: {error.details()}")
                        continue
                    tried.append(f"{address} ({error.code().name.lower()}: {error.details()})")
                    continue
            try:
                # Not a certificate, or its CA not the one the token pins (not our cluster), or
                # not issued by it for our key (an impostor echoing our CA): the next may be ours.
                facts = await keys.accept(
                    reply.ca_certificate, reply.certificate, key, token.ca_hash
                )
            except ValueError as error:
                tried.append(f"{address} ({error})")
                continue
            if cluster is not None and reply.cluster != cluster:
                raise RejectedError(
                    f"the token is for cluster {reply.cluster!r} but this node is in "
                    f"{cluster!r}: pass --cluster {reply.cluster}"
                )
            return Credential(reply.ca_certificate, key, reply.certificate, facts)
    if refusals:
        raise AccessDeniedError("could not join: " + "; ".join(refusals + tried))
    if not tried:
        raise UnreachableError(
            "the join token names no coordinator address: make a new one with "
            "`vcnode token create` on the coordinator's host"
        )
    raise UnreachableError("could not join: " + "; ".join(tried))
