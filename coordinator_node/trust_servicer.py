"""TrustService over gRPC: converts messages, calls the membership, maps errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from coordinator_node.membership import DEFAULT_TOKEN_TTL, JoinRefused, Membership, TokenProblem
from coordinator_node.membership_store import Token
from daemon.rpc.v1 import trust_pb2, trust_pb2_grpc
from daemon.transport.access import current_caller

Context = grpc.aio.ServicerContext[Any, Any]


def _token_to_proto(token: Token) -> trust_pb2.TokenInfo:
    return trust_pb2.TokenInfo(
        token_id=token.token_id,
        roles=token.roles,
        name=token.name,
        created_at=token.created_at,
        expires_at=token.expires_at,
        uses=token.uses,
        joined=token.joined,
        revoked=token.revoked,
        vouched=token.vouched,
        owner=token.owner,
    )


class TrustServicer(trust_pb2_grpc.TrustServiceServicer):
    def __init__(
        self,
        membership: Membership,
        join_addresses: Sequence[str],
        on_revoked: Callable[[list[str]], Awaitable[None]],
    ) -> None:
        self._membership = membership
        self._join_addresses = tuple(join_addresses)
        self._on_revoked = on_revoked

    async def Join(self, request: trust_pb2.JoinRequest, context: Context) -> trust_pb2.JoinReply:
        try:
            ca, cert = await self._membership.join(
                request.token_id,
                request.certificate_request,
                request.proof,
                request.node_id,
                request.cluster,
            )
        except JoinRefused as error:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
        return trust_pb2.JoinReply(
            ca_certificate=ca, certificate=cert, cluster=self._membership.cluster
        )

    async def Renew(self, request: trust_pb2.RenewRequest, context: Context) -> trust_pb2.JoinReply:
        identity = current_caller().identity
        assert identity is not None  # the access policy admits members only
        try:
            cert = await self._membership.renew(identity, request.certificate_request)
        except JoinRefused as error:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
        return trust_pb2.JoinReply(
            ca_certificate=self._membership.authority.cert_pem,
            certificate=cert,
            cluster=self._membership.cluster,
        )

    async def CreateToken(
        self, request: trust_pb2.CreateTokenRequest, context: Context
    ) -> trust_pb2.CreateTokenReply:
        try:
            join, token = await self._membership.create_token(
                list(request.roles),
                request.name,
                request.ttl_seconds or DEFAULT_TOKEN_TTL,
                request.uses,
                self._join_addresses,
                vouched=request.vouched,
                owner=request.owner,
            )
        except TokenProblem as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return trust_pb2.CreateTokenReply(token=str(join), info=_token_to_proto(token))

    async def ListTokens(
        self, request: trust_pb2.ListTokensRequest, context: Context
    ) -> trust_pb2.ListTokensReply:
        tokens = await self._membership.tokens()
        return trust_pb2.ListTokensReply(tokens=[_token_to_proto(t) for t in tokens])

    async def ListRevoked(
        self, request: trust_pb2.ListRevokedRequest, context: Context
    ) -> trust_pb2.ListRevokedReply:
        return trust_pb2.ListRevokedReply(node_ids=sorted(self._membership.revoked))

    async def RevokeToken(
        self, request: trust_pb2.RevokeTokenRequest, context: Context
    ) -> trust_pb2.RevokeTokenReply:
        try:
            revoked = await self._membership.revoke(request.token_id)
        except TokenProblem as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        await self._on_revoked(revoked)
        return trust_pb2.RevokeTokenReply(members_revoked=len(revoked))
