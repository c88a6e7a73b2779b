"""Who is looking at the dashboard: one-time login codes and signed session tokens.

A person proves who they are to the gRPC API with their certificate; `vcnode dashboard` asks
the node (over that API) for a login code, and the browser trades the code for a session
cookie. The code is short-lived and single-use because it travels in a URL (history, proxy
logs); the session is a token this node signed, so sessions survive a restart of the node
and need no table. A session says who its holder is, and every request still passes the
node's access rule (revocations included), so it carries no more right than the
certificate it came from.
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
# A token longer than this is not one of ours: refused before any decoding.
MAX_TOKEN_CHARS = 2048
KEY_FILE = "dashboard.key"


@dataclass(frozen=True)
class Viewer:
    """Who a session belongs to: the identity the certificate named, and whether it was
    this node's own (its owner's local CLI)."""

    identity: Identity
    is_self: bool
    expires_at: float


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and checks session tokens with a key kept in the node's data dir."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SessionSigner:
        path = data_dir / KEY_FILE
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            # Owner-only from the first byte: a session key lets anyone be anyone here.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(key)
        if len(key) < 32:
            raise ValueError(f"{path} is damaged (under 32 bytes): delete it to make a new one")
        return cls(key)

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
        fields = json.loads(payload)
        if fields["expires"] <= (time.time() if now is None else now):
            return None
        identity = Identity(
            node_id=fields["node"], roles=frozenset(fields["roles"]), user=fields["user"]
        )
        return Viewer(identity, bool(fields["self"]), fields["expires"])


@dataclass
class LoginCodes:
    """Codes handed out by `OpenDashboard`, each good once, for two minutes."""

    _pending: dict[str, tuple[Viewer, float]] = field(default_factory=dict)

    def issue(self, viewer: Viewer, now: float | None = None) -> str:
        now = time.time() if now is None else now
        self._forget_expired(now)
        if len(self._pending) >= MAX_PENDING_CODES:
            # Whoever asks for codes without using them pushes out only their own oldest.
            oldest = min(self._pending, key=lambda code: self._pending[code][1])
            del self._pending[oldest]
        code = secrets.token_urlsafe(24)
        self._pending[code] = (viewer, now + LOGIN_CODE_SECONDS)
        return code

    def redeem(self, code: str, now: float | None = None) -> Viewer | None:
        now = time.time() if now is None else now
        found = self._pending.pop(code, None) if len(code) <= MAX_TOKEN_CHARS else None
        if found is None or found[1] <= now:
            return None
        return found[0]

    def _forget_expired(self, now: float) -> None:
        for code in [code for code, (_, until) in self._pending.items() if until <= now]:
            del self._pending[code]


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
        self._host = host
        self.port = 0  # known once the server listens

    def open(self, caller: Caller, scrape_token: bool = False) -> DashboardLink:
        if caller.identity is None:
            raise ValueError("a stranger has no dashboard")  # the access rule stops them first
        if not self.port:
            raise ValueError("the dashboard is not listening yet")  # the node serves it first
        now = time.time()
        lifetime = SCRAPE_TOKEN_SECONDS if scrape_token else SESSION_SECONDS
        viewer = Viewer(caller.identity, caller.is_self, now + lifetime)
        if scrape_token:
            return DashboardLink(
                self._host,
                self.port,
                scrape_token=self.signer.issue(viewer),
                expires_at=now + lifetime,
            )
        code = self.codes.issue(viewer, now)
        return DashboardLink(
            self._host, self.port, f"/login?code={code}", expires_at=now + LOGIN_CODE_SECONDS
        )
