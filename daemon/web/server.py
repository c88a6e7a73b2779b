"""The dashboard and /metrics over HTTP (aiohttp), behind the node's own access rule.

Pages are static files from the package; everything they show comes from /api (JSON) and
/api/events (Server-Sent Events). Every /api and /metrics request names a session (cookie,
or `Authorization: Bearer` for scrapers) and passes the same rule as the gRPC calls, so a
revoked person loses the dashboard with the API. The dashboard only reads: it changes
nothing, so a forged cross-site request could only make a page load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

from daemon.errors import AccessDeniedError, NodeError, NotFoundError
from daemon.transport.access import DASHBOARD_RULE, METRICS_RULE, AccessPolicy, Caller
from daemon.web.sessions import DASHBOARD, LoginCodes, SessionSigner, Viewer
from daemon.web.site import SAMPLE_SECONDS, LiveEvent, Query, WebSite

log = logging.getLogger(__name__)

COOKIE = "vcnode_session"
# An SSE comment this often keeps proxies and the browser from calling the stream dead.
KEEPALIVE_SECONDS = 5.0
LAG_PROBE_SECONDS = 0.5
MAX_PATH_PARAMETER_CHARS = 256
MAX_QUERY_VALUE_CHARS = 256
SHUTDOWN_SECONDS = 2.0
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_NOT_LOGGED_IN = (
    "not logged in: run `vcnode dashboard` (on this node's host, or with your credential from "
    "`vcnode login`) and open the link it prints"
)


def static_dir() -> Path:
    return Path(str(resources.files("daemon.web") / "static"))


class DashboardServer:
    def __init__(
        self,
        site: WebSite,
        policy: AccessPolicy,
        signer: SessionSigner,
        codes: LoginCodes,
        cookie: str = COOKIE,
    ) -> None:
        self._site = site
        # Named after the node: browsers send a host's cookies to all its ports, and two
        # dashboards on one host must not take each other's sessions.
        self._cookie = cookie
        self._policy = policy
        self._signer = signer
        self._codes = codes
        self._registry = CollectorRegistry(auto_describe=True)
        for collector in site.collectors:
            self._registry.register(collector)
        self._loop_lag = Histogram(
            "vcnode_event_loop_lag_seconds",
            "How late the node's event loop ran a timer: time nothing else could be served",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self._registry,
        )
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------

    def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._headers], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_static("/static/", static_dir(), follow_symlinks=False)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/whoami", self._whoami)
        app.router.add_get("/api/samples", self._samples)
        app.router.add_get("/api/events", self._events)
        for path, endpoint in self._site.endpoints.items():
            app.router.add_get(f"/api/{path}", self._endpoint(endpoint))
        return app

    async def start(self, host: str, port: int) -> int:
        """Listens on host:port (0 picks a port) and returns the port."""
        runner = web.AppRunner(
            self._application(), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await runner.setup()
        self._runner = runner
        host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.create_server((host, port), family=family)
        await web.SockSite(runner, listening).start()
        self.port = listening.getsockname()[1]
        self._spawn(self._sample_forever())
        for work in self._site.background:
            self._spawn(work())
        self._spawn(self._probe_loop_lag())
        return self.port

    async def stop(self) -> None:
        self._site.hub.close()  # open event streams end, so cleanup need not wait for them
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sample_forever(self) -> None:
        while True:
            try:
                sample = await self._site.samples.take()
            except Exception:  # a role's figure failing must not end the charts
                log.exception("a dashboard sample failed")
            else:
                self._site.publish("sample", sample)
            await asyncio.sleep(SAMPLE_SECONDS)  # a period, not a wait

    async def _probe_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_SECONDS)  # a probe: how late does it wake?
            self._loop_lag.observe(max(0.0, loop.time() - before - LAG_PROBE_SECONDS))

    # --- who is asking --------------------------------------------------------------------

    def _viewer(self, request: web.Request) -> Viewer | None:
        token = request.cookies.get(self._cookie, "")
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ").strip()
        return self._signer.check(token)

    def _refusal(self, viewer: Viewer, rule: str) -> str | None:
        """Why this session may not make a request under `rule` now, or None."""
        if viewer.expires_at <= time.time():
            return "this session ended: run `vcnode dashboard` again"
        if rule == DASHBOARD_RULE and viewer.scope != DASHBOARD:
            return "a scrape token opens /metrics only: run `vcnode dashboard` for the pages"
        refusal = self._policy.refusal(rule, Caller(viewer.identity, is_self=viewer.is_self))
        return refusal[1] if refusal is not None else None

    def _caller(self, request: web.Request, rule: str) -> tuple[Caller, Viewer]:
        """The person making the request, or an HTTP error saying why they may not."""
        viewer = self._viewer(request)
        if viewer is None:
            raise _error(web.HTTPUnauthorized, _NOT_LOGGED_IN)
        refusal = self._refusal(viewer, rule)
        if refusal is not None:
            raise _error(web.HTTPForbidden, refusal)
        return Caller(viewer.identity, is_self=viewer.is_self), viewer

    # --- pages ----------------------------------------------------------------------------

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            error.headers.update(_HEADERS)
            raise
        response.headers.update(_HEADERS)
        return response

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(static_dir() / "index.html")

    async def _login(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            # Another site sent the browser here: it would log its visitor in as whoever
            # owns the code (login CSRF). A link opened from `vcnode dashboard` says "none".
            raise _error(
                web.HTTPForbidden,
                "a login link works only when opened directly (paste it into the address bar)",
            )
        viewer = self._codes.redeem(request.query.get("code", ""))
        if viewer is None:
            raise _error(
                web.HTTPUnauthorized,
                "this login link was used already or expired (links last two minutes and work "
                "once): run `vcnode dashboard` again",
            )
        # The URL held the code; land on one that does not, so it stays out of history.
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            self._cookie,
            self._signer.issue(viewer),
            max_age=max(0, int(viewer.expires_at - time.time())),
            httponly=True,
            samesite="Strict",
            path="/",
        )
        raise response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPNoContent()
        response.del_cookie(self._cookie, path="/")
        raise response

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        self._caller(request, METRICS_RULE)
        # On the loop: the collectors read the roles' live state, which only the loop may
        # touch (formatting a few hundred samples takes well under a millisecond).
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _whoami(self, request: web.Request) -> web.StreamResponse:
        caller, _ = self._caller(request, DASHBOARD_RULE)
        return web.json_response(
            {
                "who": caller.describe(),
                "owner": caller.owner,
                "sees_everything": caller.sees_everything,
                "title": self._site.title,
                "roles": list(self._site.roles),
            }
        )

    async def _samples(self, request: web.Request) -> web.StreamResponse:
        self._caller(request, DASHBOARD_RULE)
        return web.json_response(list(self._site.samples.history))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        caller, viewer = self._caller(request, DASHBOARD_RULE)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        response.headers.update(_HEADERS)
        await response.prepare(request)
        queue = self._site.hub.subscribe()
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    event = LiveEvent("keepalive", {})
                if event is None:
                    break
                # An open stream is asked again at each event: a revoked person or an
                # ended session stops hearing at once, not when the page reloads.
                refusal = self._refusal(viewer, DASHBOARD_RULE)
                if refusal is not None:
                    data = json.dumps({"error": refusal})
                    await response.write(f"event: refused\ndata: {data}\n\n".encode())
                    break
                if event.kind == "keepalive":
                    await response.write(b": keepalive\n\n")
                    continue
                if event.visible_to(caller):
                    data = json.dumps(event.data, separators=(",", ":"))
                    await response.write(f"event: {event.kind}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the page went away, or the node is stopping
        finally:
            self._site.hub.unsubscribe(queue)
        return response

    def _endpoint(self, endpoint: Callable[[Query], Awaitable[Any]]) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            caller, _ = self._caller(request, DASHBOARD_RULE)
            path = dict(request.match_info)
            args = {key: request.query[key] for key in request.query}
            too_long = [
                key
                for key, value in [*path.items(), *args.items()]
                if len(value) > MAX_PATH_PARAMETER_CHARS
            ]
            if too_long:
                raise _error(
                    web.HTTPBadRequest,
                    f"{too_long[0]} is longer than {MAX_PATH_PARAMETER_CHARS} characters",
                )
            try:
                found = await endpoint(Query(path, args, caller))
            except NotFoundError as error:
                raise _error(web.HTTPNotFound, str(error)) from None
            except AccessDeniedError as error:
                raise _error(web.HTTPForbidden, str(error)) from None
            except NodeError as error:
                raise _error(web.HTTPBadRequest, str(error)) from None
            return web.json_response(found)

        return handle


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json")
