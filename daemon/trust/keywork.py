"""A node's key work (a new key, its certificate request, checking the certificate it gets)
in a short-lived child process.

A node needs `cryptography` only to join and to renew its certificate: a few moments every
few weeks. Imported in the daemon, it would stay for good (~8 MiB of a volunteer's ~70 on
the machine it borrows), so the work runs in a child (`python -m daemon.trust.keywork`)
that exits when it is done and takes that memory with it. The parent and the child speak
JSON, one line a message, over the child's stdin and stdout; the key comes back the same
way and is never written anywhere else than where the caller saves it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from types import TracebackType
from typing import Any

from daemon.children import start_module
from daemon.errors import NodeError
from daemon.trust.facts import CertificateFacts

# Starting Python and importing `cryptography` takes ~0.2 s; a loaded machine may take more.
REPLY_TIMEOUT_SECONDS = 60.0
EXIT_TIMEOUT_SECONDS = 5.0
# What is kept of the child's stderr, to say why it failed.
STDERR_TAIL_BYTES = 4096


class KeyWorker:
    """One child process, for one join or one renewal: `async with KeyWorker() as keys`."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        # Read as it comes, so that a child that writes much there never blocks on it.
        self._stderr = bytearray()
        self._stderr_reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KeyWorker:
        try:
            self._process = await start_module(__name__, stdin=asyncio.subprocess.PIPE)
        except OSError as error:
            raise NodeError(
                f"cannot start {sys.executable} to make this node's key ({error}); check that "
                "the Python that runs the node can start another of itself"
            ) from None
        if self._process.stderr is not None:
            reading = self._read_stderr(self._process.stderr)
            self._stderr_reader = asyncio.get_running_loop().create_task(reading)
        return self

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(STDERR_TAIL_BYTES):
            self._stderr += chunk
            del self._stderr[:-STDERR_TAIL_BYTES]

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        process, reader = self._process, self._stderr_reader
        if process is None:
            return
        self._process = self._stderr_reader = None
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), EXIT_TIMEOUT_SECONDS)
        except TimeoutError:  # its work is done: a child that hangs on is not kept
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def new_request(self, node_id: str) -> tuple[bytes, bytes]:
        """A new key (PEM) and a certificate request (DER) for it that names `node_id`."""
        reply = await self._call({"do": "request", "node_id": node_id})
        return _bytes(reply["key"]), _bytes(reply["request"])

    async def accept(
        self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, pinned_ca_hash: str | None = None
    ) -> CertificateFacts:
        """See daemon.trust.pki.accept_certificate: ValueError when the certificate is not
        one to accept, with the reason."""
        reply = await self._call(
            {
                "do": "accept",
                "ca": _text(ca_pem),
                "cert": _text(cert_pem),
                "key": _text(key_pem),
                "ca_hash": pinned_ca_hash,
            }
        )
        return CertificateFacts.from_json(reply["facts"])

    async def facts_of(self, cert_pem: bytes, ca_pem: bytes) -> CertificateFacts:
        """What the certificate `cert_pem`, issued under `ca_pem`, says (daemon.trust.pki.
        facts_of); ValueError when either is not a certificate."""
        reply = await self._call({"do": "facts", "cert": _text(cert_pem), "ca": _text(ca_pem)})
        return CertificateFacts.from_json(reply["facts"])

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            raise RuntimeError("KeyWorker is used outside `async with`")
        process.stdin.write(json.dumps(request).encode() + b"\n")
        try:
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), REPLY_TIMEOUT_SECONDS)
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        except TimeoutError:
            raise NodeError(
                f"the process making this node's key did not answer in "
                f"{REPLY_TIMEOUT_SECONDS:.0f} s; is the machine overloaded?"
            ) from None
        if not line:
            await process.wait()
            if self._stderr_reader is not None:
                await self._stderr_reader  # to the end of what it wrote
            said = self._stderr.decode(errors="replace").strip().splitlines()
            last = said[-1:] or ["no message"]
            raise NodeError(
                f"the process making this node's key failed (exit code {process.returncode}: "
                f"{last[0]}); check that `cryptography` is installed for {sys.executable}"
            )
        reply: dict[str, Any] = json.loads(line)
        if "refused" in reply:
            raise ValueError(reply["refused"])
        return reply


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    """The child's side of one message."""
    from daemon.trust import pki

    if request["do"] == "request":
        key = pki.new_key()
        return {
            "key": _text(pki.key_pem(key)),
            "request": _text(pki.certificate_request(key, request["node_id"])),
        }
    if request["do"] == "accept":
        facts = pki.accept_certificate(
            _bytes(request["ca"]), _bytes(request["cert"]), _bytes(request["key"]),
            request["ca_hash"],
        )  # fmt: skip
        return {"facts": facts.to_json()}
    if request["do"] == "facts":
        return {"facts": pki.facts_of(_bytes(request["cert"]), _bytes(request["ca"])).to_json()}
    raise RuntimeError(f"no such key work: {request['do']!r}")


def main() -> None:
    for line in sys.stdin:
        try:
            reply = _serve(json.loads(line))
        except ValueError as error:
            reply = {"refused": str(error)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
