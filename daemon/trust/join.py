"""Joining a cluster with a token: trust nothing until the CA matches the token's hash.

The exchange runs on the coordinator's plaintext join port and needs no secrecy: the request
carries a CSR and an HMAC keyed with the token's secret digest (the secret itself never
travels), and the reply, a CA and a certificate, is accepted only if the CA has the hash the
token pins and the certificate was issued by it for our own key. A man in the middle can
at worst waste a use of the token.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from daemon.errors import AccessDeniedError, RejectedError, UnreachableError
from daemon.rpc.v1 import trust_pb2, trust_pb2_grpc
from daemon.transport.channels import open_join_channel
from daemon.trust import pki
from daemon.trust.credentials import Credential
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
    key = pki.new_key()
    request = pki.certificate_request(key, node_id)
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
            ca = pki.load_cert(reply.ca_certificate)
            cert = pki.load_cert(reply.certificate)
        except ValueError:
            tried.append(f"{address} (sent something that is not a certificate)")
            continue
        if pki.ca_hash(ca) != token.ca_hash:
            tried.append(f"{address} (its CA is not the one the token names: not our cluster)")
            continue
        try:
            pki.check_issued(ca, cert, key)
        except ValueError as error:  # an impostor echoing our CA: the next may be ours
            tried.append(f"{address} ({error})")
            continue
        if cluster is not None and reply.cluster != cluster:
            raise RejectedError(
                f"the token is for cluster {reply.cluster!r} but this node is in {cluster!r}: "
                f"pass --cluster {reply.cluster}"
            )
        return Credential(reply.ca_certificate, pki.key_pem(key), reply.certificate)
    if refusals:
        raise AccessDeniedError("could not join: " + "; ".join(refusals + tried))
    if not tried:
        raise UnreachableError(
            "the join token names no coordinator address: make a new one with "
            "`vcnode token create` on the coordinator's host"
        )
    raise UnreachableError("could not join: " + "; ".join(tried))
