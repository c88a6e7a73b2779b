"""`vcnode token create|list|revoke` (the cluster's admin) and `vcnode login` (a person)."""

from __future__ import annotations

import argparse
import time
import uuid

from cli import views
from cli.credentials import client_dir
from cli.rpc import connected
from daemon.errors import InvalidInputError
from daemon.rpc.v1 import trust_pb2, trust_pb2_grpc
from daemon.transport.channels import Dial
from daemon.trust.credentials import USER
from daemon.trust.join import join_cluster
from daemon.trust.tokens import JoinToken

CALL_TIMEOUT_SECONDS = 10.0


def _token_json(info: trust_pb2.TokenInfo) -> dict[str, object]:
    return {
        "token_id": info.token_id,
        "roles": list(info.roles),
        "name": info.name,
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "uses": info.uses,
        "joined": info.joined,
        "revoked": info.revoked,
        "vouched": info.vouched,
        "owner": info.owner,
    }


def _vouching(info: trust_pb2.TokenInfo) -> str:
    """`, vouched, owned by alice`, as much of it as the token says."""
    owned = f", owned by {info.owner}" if info.owner else ""
    return (", vouched" if info.vouched else "") + owned


def _token_state(info: trust_pb2.TokenInfo) -> str:
    if info.revoked:
        return "revoked"
    if info.expires_at <= time.time():
        return "expired"
    if info.uses and info.joined >= info.uses:
        return "used up"
    return "valid"


async def create(peer: Dial, args: argparse.Namespace) -> int:
    request = trust_pb2.CreateTokenRequest(
        roles=[role for role in args.token_role.split(",") if role],
        name=args.name or "",
        ttl_seconds=args.ttl,
        uses=args.uses,
        vouched=args.vouched,
        owner=args.owner or "",
    )
    async with connected(peer, "coordinator") as channel:
        reply = await trust_pb2_grpc.TrustServiceStub(channel).CreateToken(
            request, timeout=CALL_TIMEOUT_SECONDS
        )
    if args.json:
        views.print_json({"token": reply.token, **_token_json(reply.info)})
        return 0
    info = reply.info
    uses = (
        f"{info.uses} join{'s' if info.uses != 1 else ''}" if info.uses else "any number of joins"
    )
    print(reply.token)
    print(
        f"\ntoken {info.token_id}: {', '.join(info.roles)}"
        f"{' for ' + info.name if info.name else ''}{_vouching(info)}, valid until "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(info.expires_at))}, {uses}"
    )
    if set(info.roles) & {"user", "admin"}:
        print("the person types: vcnode login TOKEN")
    else:
        print(f"start the node with: vcnode daemon --role {','.join(info.roles)} --token TOKEN")
    return 0


async def list_tokens(peer: Dial, args: argparse.Namespace) -> int:
    async with connected(peer, "coordinator") as channel:
        reply = await trust_pb2_grpc.TrustServiceStub(channel).ListTokens(
            trust_pb2.ListTokensRequest(), timeout=CALL_TIMEOUT_SECONDS
        )
    if args.json:
        views.print_json([_token_json(info) for info in reply.tokens])
        return 0
    rows = [
        [
            info.token_id,
            ",".join(info.roles),
            info.name or "-",
            "yes" if info.vouched else "-",
            info.owner or "-",
            _token_state(info),
            f"{info.joined}/{info.uses or '∞'}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(info.expires_at)),
        ]
        for info in reply.tokens
    ]
    headers = ["TOKEN", "ROLES", "NAME", "VOUCHED", "OWNER", "STATE", "JOINED", "EXPIRES"]
    print(views.table(headers, rows))
    return 0


async def revoke(peer: Dial, args: argparse.Namespace) -> int:
    async with connected(peer, "coordinator") as channel:
        reply = await trust_pb2_grpc.TrustServiceStub(channel).RevokeToken(
            trust_pb2.RevokeTokenRequest(token_id=args.token_id), timeout=CALL_TIMEOUT_SECONDS
        )
    count = reply.members_revoked
    print(
        f"token {args.token_id} revoked, with the {count} member{'s' if count != 1 else ''} "
        "that joined with it"
    )
    return 0


async def login(args: argparse.Namespace) -> int:
    """Trades a user token for a credential kept in ~/.config/vcnode."""
    try:
        token = JoinToken.parse(args.token)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None
    credential = await join_cluster(token, f"user-{uuid.uuid4().hex[:16]}", cluster=None)
    identity = credential.identity
    if identity.user is None:
        raise InvalidInputError(
            "that token is for a node, not a person: start a daemon with it "
            "(vcnode daemon --token TOKEN), or ask for a token made with --role user"
        )
    directory = client_dir()
    credential.save(directory, USER)
    print(
        f"logged in as {identity.user} ({', '.join(sorted(identity.roles))}); kept in {directory}"
    )
    return 0
