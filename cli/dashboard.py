"""`vcnode dashboard`: a login link into a node's web dashboard, or a token for a scraper."""

from __future__ import annotations

import argparse
import sys
import time

from cli import views
from cli.rpc import connected
from daemon.rpc.v1 import node_pb2, node_pb2_grpc
from daemon.transport import addresses
from daemon.transport.channels import Dial

CALL_TIMEOUT_SECONDS = 5.0
_WILDCARDS = ("", "0.0.0.0", "::")


def dashboard_url(reply: node_pb2.OpenDashboardReply, dialed: str) -> str:
    """Where the dashboard is, as seen from here: a node listening on every interface is
    reached at the host this command dialed for its API."""
    host = reply.host
    if host in _WILDCARDS:
        host = addresses.split(dialed)[0]
    return f"http://{addresses.join(host, reply.port)}"


async def open_dashboard(peer: Dial, args: argparse.Namespace) -> int:
    async with connected(peer, "node") as channel:
        reply = await node_pb2_grpc.NodeServiceStub(channel).OpenDashboard(
            node_pb2.OpenDashboardRequest(
                scrape_token=args.scrape_token, end_sessions=args.end_sessions
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
    base = dashboard_url(reply, peer.address)
    if args.end_sessions:
        if args.json:
            views.print_json({"url": base, "sessions_ended": True})
        else:
            print(f"every session and scrape token of {base} ended: log in again")
        return 0
    if args.json:
        views.print_json(
            {
                "url": base + reply.login_path if reply.login_path else base,
                "metrics": base + "/metrics",
                "scrape_token": reply.scrape_token,
                "expires_at": reply.expires_at,
            }
        )
        return 0
    if args.scrape_token:
        days = (reply.expires_at - time.time()) / 86400
        print(
            f"# A bearer token for {base}/metrics only, valid {days:.0f} days: in "
            "prometheus.yml, `authorization: {credentials: TOKEN}`",
            file=sys.stderr,
        )
        print(reply.scrape_token)
        return 0
    print(f"{base}{reply.login_path}")
    print(
        "(open it within two minutes; it works once and logs this browser in for 12 hours)",
    )
    return 0
