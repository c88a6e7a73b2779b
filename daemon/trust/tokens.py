"""Join tokens: what a new node needs to join a cluster, in one string.

`vcn1-<id>-<secret>-<ca hash>[@<address>,...]`, the kubeadm join model: the CA hash lets
the joining node check it talks to the cluster it was invited to before it trusts anything;
the secret proves to the coordinator that it was invited. The secret never crosses the
network: the node sends an HMAC of its certificate request keyed with the secret's digest,
which is what the coordinator keeps. The addresses, when present, are where the
coordinator's join port listened when the token was made (mDNS finds it otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from daemon.transport import addresses as address_rules

PREFIX = "vcn1"
ID_CHARS = 8  # 40 bits: names the token, no secret
SECRET_CHARS = 26  # 130 bits
_B32 = "[a-z2-7]"
_SHAPE = re.compile(
    rf"{PREFIX}-(?P<id>{_B32}{{{ID_CHARS}}})-(?P<secret>{_B32}{{{SECRET_CHARS}}})"
    rf"-(?P<ca>{_B32}{{52}})(@(?P<addresses>[^\s]+))?"
)
MAX_ADDRESSES = 16


@dataclass(frozen=True)
class JoinToken:
    token_id: str
    secret: str
    ca_hash: str
    addresses: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{PREFIX}-{self.token_id}-{self.secret}-{self.ca_hash}"
        return f"{text}@{','.join(self.addresses)}" if self.addresses else text

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        """ValueError with a message for people when `text` is not a join token."""
        match = _SHAPE.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                "not a join token (expected vcn1-<id>-<secret>-<ca hash>[@HOST:PORT,...], "
                "as `vcnode token create` prints it)"
            )
        listed = match["addresses"]
        found = tuple(listed.split(",")) if listed else ()
        if len(found) > MAX_ADDRESSES or not all(address_rules.valid(a) for a in found):
            raise ValueError("the join token's addresses are not HOST:PORT,HOST:PORT...")
        return cls(match["id"], match["secret"], match["ca"], found)

    @property
    def key(self) -> bytes:
        return secret_key(self.secret)


def secret_key(secret: str) -> bytes:
    """What the coordinator keeps of a secret, and the HMAC key both ends use."""
    return hashlib.sha256(f"vcnode join secret {secret}".encode()).digest()


def proof(key: bytes, request: bytes) -> bytes:
    """Proves knowledge of the token's secret, bound to this one certificate request."""
    return hmac.new(key, request, hashlib.sha256).digest()


def proof_holds(key: bytes, request: bytes, claimed: bytes) -> bool:
    return hmac.compare_digest(proof(key, request), claimed)
