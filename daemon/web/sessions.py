"""Who is looking at the dashboard: one-time login codes and signed session tokens.

A person proves who they are to the gRPC API with their certificate; `vcnode dashboard` asks
the node (over that API) for a login code, and the browser trades the code for a session
cookie. The code is short-lived and single-use because it travels in a URL (history, proxy
logs); the session is a token this node signed, so sessions survive a restart of the node
and need no table. A session says who its holder is and never outlives the certificate it
came from; every request (and every event of an open stream) still passes the node's access
rule, revocations included. A new key ends every session at once (`vcnode dashboard
--end-sessions`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon.transport.access import Caller
from daemon.trust.pki import Identity

LOGIN_CODE_SECONDS = 120.0
SESSION_SECONDS = 12 * 3600.0
# Bearer tokens for scrapers (Prometheus) live longer: `vcnode dashboard --scrape-token`.
SCRAPE_TOKEN_SECONDS = 90 * 24 * 3600.0
MAX_PENDING_CODES = 256
MAX_CODES_PER_PERSON = 4
# A token longer than this is not one of ours: refused before any decoding.
MAX_TOKEN_CHARS = 2048
KEY_FILE = "dashboard.key"

# What a session may open: the dashboard (pages, API, live events, /metrics), or /metrics
# alone (a scraper's token: a config file is no place for the right to read logs).
DASHBOARD = "dashboard"
METRICS = "metrics"


@dataclass(frozen=True)
class Viewer:
    """Who a session belongs to: the identity the certificate named, whether it was this
    node's own (its owner's local CLI), until when, and for what."""

    identity: Identity
    is_self: bool
    expires_at: float
    scope: str = DASHBOARD


def _write_key(path: Path) -> bytes:
    """A fresh key in `path`, owner-only from its first byte (it lets anyone be anyone
    here), replacing any key there in one step."""
    key = secrets.token_bytes(32)
    fresh = path.with_name(path.name + ".new")
    fresh.unlink(missing_ok=True)
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key)
        file.flush()
        os.fsync(file.fileno())
    os.replace(fresh, path)
    return key


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and checks session tokens with a key kept in the node's data dir."""

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        self._key = key
        self._path = path

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SessionSigner:
        path = data_dir / KEY_FILE
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = _write_key(path)
        if len(key) < 32:
            raise ValueError(f"{path} is damaged (under 32 bytes): delete it to make a new one")
        return cls(key, path)

    def end_every_session(self) -> None:
        """A new key: every session and scrape token signed so far stops working, now and
        after a restart (logout for all, after a leaked token)."""
        self._key = _write_key(self._path) if self._path is not None else secrets.token_bytes(32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, viewer: Viewer) -> str:
        identity = viewer.identity
        payload = json.dumps(
            {
                "node": identity.node_id,
                "roles": sorted(identity.roles),
                "user": identity.user,
                "self": viewer.is_self,
                "expires": round(viewer.expires_at, 3),
                "scope": viewer.scope,
            },
            separators=(",", ":"),
        ).encode()
        return f"{_encode(payload)}.{_encode(self._mac(payload))}"

    def check(self, token: str, now: float | None = None) -> Viewer | None:
        """The viewer a token names, or None for a forged, damaged or expired one."""
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            return None
        body, _, mac = token.partition(".")
        try:
            payload, signature = _decode(body), _decode(mac)
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._mac(payload)):
            return None
        fields = json.loads(payload)  # ours: only this node's key signs
        if fields["expires"] <= (time.time() if now is None else now):
            return None
        identity = Identity(
            node_id=fields["node"], roles=frozenset(fields["roles"]), user=fields["user"]
        )
        return Viewer(identity, bool(fields["self"]), fields["expires"], fields["scope"])


@dataclass
class LoginCodes:
    """Codes handed out by `OpenDashboard`, each good once, for two minutes."""

    _pending: dict[str, tuple[Viewer, float]] = field(default_factory=dict)

    def issue(self, viewer: Viewer, now: float | None = None) -> str:
        now = time.time() if now is None else now
        self._forget_expired(now)
        node_id = viewer.identity.node_id
        own = [c for c, (held, _) in self._pending.items() if held.identity.node_id == node_id]
        # Whoever asks for codes without using them pushes out their own oldest; only many
        # people at once push out the oldest code of all.
        if len(own) >= MAX_CODES_PER_PERSON:
            self._drop_oldest(own)
        elif len(self._pending) >= MAX_PENDING_CODES:
            self._drop_oldest(list(self._pending))
        code = secrets.token_urlsafe(24)
        self._pending[code] = (viewer, now + LOGIN_CODE_SECONDS)
        return code

    def redeem(self, code: str, now: float | None = None) -> Viewer | None:
        now = time.time() if now is None else now
        found = self._pending.pop(code, None) if len(code) <= MAX_TOKEN_CHARS else None
        if found is None or found[1] <= now:
            return None
        return found[0]

    def _drop_oldest(self, codes: list[str]) -> None:
        del self._pending[min(codes, key=lambda code: self._pending[code][1])]

    def _forget_expired(self, now: float) -> None:
        for code in [code for code, (_, until) in self._pending.items() if until <= now]:
            del self._pending[code]

    def __len__(self) -> int:
        return len(self._pending)


@dataclass(frozen=True)
class DashboardLink:
    """What `vcnode dashboard` prints: where to go, and the code or token to go with."""

    host: str
    port: int
    login_path: str = ""
    scrape_token: str = ""
    expires_at: float = 0.0


class DashboardDoor:
    """Lets people with a right to the dashboard in: called by NodeService.OpenDashboard,
    which the access rule already let through."""

    def __init__(self, signer: SessionSigner, codes: LoginCodes, host: str) -> None:
        self.signer = signer
        self.codes = codes
        self.host = host
        self.port = 0  # known once the server listens

    def open(
        self, caller: Caller, scrape_token: bool = False, certificate_expires_at: float = 0.0
    ) -> DashboardLink:
        """A login link for `caller`, or a scrape token; neither outlives the certificate
        the caller presented (`certificate_expires_at`; 0 when unknown)."""
        if caller.identity is None:
            raise ValueError("a stranger has no dashboard")  # the access rule stops them first
        if not self.port:
            raise ValueError("the dashboard is not listening yet")  # the node serves it first
        now = time.time()
        expires_at = now + (SCRAPE_TOKEN_SECONDS if scrape_token else SESSION_SECONDS)
        if certificate_expires_at:
            expires_at = min(expires_at, certificate_expires_at)
        if scrape_token:
            # A scraper reads /metrics only, and never with its owner's powers.
            viewer = Viewer(caller.identity, False, expires_at, METRICS)
            token = self.signer.issue(viewer)
            return DashboardLink(self.host, self.port, scrape_token=token, expires_at=expires_at)
        code = self.codes.issue(Viewer(caller.identity, caller.is_self, expires_at), now)
        return DashboardLink(
            self.host, self.port, f"/login?code={code}", expires_at=now + LOGIN_CODE_SECONDS
        )
