"""transfer_*: 1 GiB over loopback with sha256 verified on receipt, our gRPC TransferService
against an aiohttp baseline measured in the same run.

- transfer_download_ratio: gRPC download throughput / aiohttp static file -> hashing client
- transfer_upload_ratio: gRPC upload throughput / aiohttp client -> handler hashing as it writes
- transfer_peak_rss_server, transfer_peak_rss_client: the gRPC ends' peak RSS over all rounds

The gRPC ends speak mutual TLS, as every channel of the mesh does: the driver makes a CA
for the run and, with it, a manager's credential for the server and a volunteer's for the
clients (files under the run's dir, read by each end). The aiohttp baseline is plaintext
HTTP, as before mTLS: the ratios include what TLS costs the gRPC ends.

Every end runs in its own process (so RSS is per end); both baselines write the received
bytes to a file, as the gRPC ends write them into their blob store (which syncs a blob to
disk after publishing it, off the clock here as the baseline's writeback is). Between
rounds everything is flushed to disk (os.sync), so a round starts clean. Files live under
/tmp (or $VCNODE_BENCH_DIR) and are removed at the end.

`python -m benchmarks.transfer ROLE ARGS...` runs one end; `run()` drives them all
(`python -m benchmarks.transfer` prints the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.report import Figure

if TYPE_CHECKING:
    from daemon.transport.channels import Dial
    from daemon.trust.credentials import Credential

SIZE = 1 << 30
ROUNDS = 5
BLOCK = 1 << 20
REPO = Path(__file__).resolve().parents[1]


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _report(seconds: float) -> None:
    print(json.dumps({"seconds": seconds, "rss_mib": _max_rss_mib()}), flush=True)


# --- credentials: one CA for the run, a manager's certificate for the server ----------------

SERVER = "server"
CLIENT = "client"


def _make_credentials(directory: Path) -> None:
    """A CA of the run's own in `directory`, and the two ends' credentials beside it."""
    from daemon.trust.authority import ClusterAuthority
    from daemon.trust.pki import Identity

    authority = ClusterAuthority.load_or_create(directory, "bench-transfer")
    for stem, role in ((SERVER, "manager"), (CLIENT, "volunteer")):
        identity = Identity(uuid.uuid4().hex, frozenset({role}))
        authority.credential(identity).save(directory, stem)


def _load_credential(directory: str, stem: str) -> Credential:
    from daemon.trust.credentials import Credential

    credential = Credential.load(Path(directory), stem)
    if credential is None:
        raise SystemExit(f"no {stem} credential in {directory}")
    return credential


def _dial(address: str, credentials: str) -> Dial:
    """How a volunteer dials a manager's TransferService: a Dial, so the transfer runs on a
    blocking channel of its own (see daemon/transfer/client.py)."""
    from daemon.transport.channels import Dial
    from daemon.trust.pki import role_name

    return Dial(address, _load_credential(credentials, CLIENT), role_name("manager"))


# --- the ends, each in its own process ------------------------------------------------------


async def _serve_commands(on_delete: Callable[[str], Awaitable[None]]) -> None:
    """Answers the driver on stdin: `delete SHA`, `rss`; stops at EOF."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command, _, argument = line.strip().partition(" ")
        if command == "delete":
            await on_delete(argument)
            print("ok", flush=True)
        elif command == "rss":
            print(f"{_max_rss_mib():.1f}", flush=True)


async def grpc_serve(store_dir: str, source: str, credentials: str) -> None:
    from daemon.transfer.blobstore import BlobStore
    from daemon.transfer.servicer import AllowAll, TransferServicer, add_transfer_service
    from daemon.transport.access import AccessPolicy
    from daemon.transport.channels import bind, create_server

    credential = _load_credential(credentials, SERVER)
    store = BlobStore(Path(store_dir), max_blob_bytes=2 * SIZE, quota_bytes=8 * SIZE)
    await store.put_file(Path(source))
    server = create_server(AccessPolicy(credential.identity.node_id))
    add_transfer_service(server, TransferServicer(store, AllowAll()))
    port = bind(server, "127.0.0.1:0", credential)
    if not port:
        raise SystemExit("grpc-serve: could not bind a loopback port")
    await server.start()
    print(f"ready 127.0.0.1:{port}", flush=True)

    async def delete(sha256: str) -> None:
        await store.delete(sha256)

    await _serve_commands(delete)
    await server.stop(None)
    await store.close()


async def grpc_download(
    address: str, sha256: str, size: str, store_dir: str, credentials: str
) -> None:
    from daemon.transfer.blobstore import BlobStore
    from daemon.transfer.client import download

    peer = _dial(address, credentials)
    store = BlobStore(Path(store_dir), max_blob_bytes=2 * SIZE, quota_bytes=4 * SIZE)
    await store.open()
    started = time.perf_counter()
    await download(peer, sha256, int(size), store)
    _report(time.perf_counter() - started)
    await store.close()


async def grpc_upload(address: str, source: str, sha256: str, size: str, credentials: str) -> None:
    from daemon.transfer.client import upload

    peer = _dial(address, credentials)
    started = time.perf_counter()
    await upload(peer, Path(source), sha256, int(size), "benchmark")
    _report(time.perf_counter() - started)


async def http_serve(received_dir: str, source: str) -> None:
    from aiohttp import web

    async def upload(request: web.Request) -> web.Response:
        hasher = hashlib.sha256()
        path = Path(received_dir) / uuid.uuid4().hex
        with path.open("wb", buffering=0) as out:
            async for block in request.content.iter_chunked(BLOCK):
                hasher.update(block)
                out.write(block)
            if request.query.get("fsync"):  # the durable variant (context only, see run())
                os.fsync(out.fileno())
        if hasher.hexdigest() != request.match_info["sha256"]:
            path.unlink()
            raise web.HTTPBadRequest(text="sha256 mismatch")
        return web.json_response({"sha256": hasher.hexdigest(), "size": path.stat().st_size})

    async def blob(request: web.Request) -> web.FileResponse:
        return web.FileResponse(source)

    app = web.Application(client_max_size=2 * SIZE)
    app.router.add_get("/blob", blob)
    app.router.add_post("/upload/{sha256}", upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"ready 127.0.0.1:{port}", flush=True)

    async def delete(_: str) -> None:
        await asyncio.to_thread(shutil.rmtree, received_dir)
        await asyncio.to_thread(os.mkdir, received_dir)

    await _serve_commands(delete)
    await runner.cleanup()


async def http_download(
    address: str, sha256: str, size: str, dest_dir: str, fsync: str = ""
) -> None:
    import aiohttp

    started = time.perf_counter()
    hasher = hashlib.sha256()
    path = Path(dest_dir) / sha256
    async with (
        aiohttp.ClientSession(read_bufsize=BLOCK) as session,
        session.get(f"http://{address}/blob") as response,
    ):
        response.raise_for_status()
        with path.open("wb", buffering=0) as out:
            async for block in response.content.iter_chunked(BLOCK):
                hasher.update(block)
                out.write(block)
            if fsync:  # the durable variant (context only, see run())
                os.fsync(out.fileno())
    if hasher.hexdigest() != sha256 or path.stat().st_size != int(size):
        raise SystemExit("http download: sha256 mismatch")
    _report(time.perf_counter() - started)


async def http_upload(address: str, source: str, sha256: str, size: str, fsync: str = "") -> None:
    import aiohttp

    async def blocks() -> AsyncIterator[bytes]:
        # Plain blocking reads, as a simple client does; they come from the page cache.
        with Path(source).open("rb", buffering=0) as reader:  # noqa: ASYNC230
            while block := reader.read(BLOCK):
                yield block

    started = time.perf_counter()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://{address}/upload/{sha256}",
            data=blocks(),
            params={"fsync": fsync} if fsync else None,
        ) as response,
    ):
        response.raise_for_status()
        reply = await response.json()
    if reply["size"] != int(size):
        raise SystemExit("http upload: size mismatch")
    _report(time.perf_counter() - started)


ROLES: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {
    "grpc-serve": grpc_serve,
    "grpc-download": grpc_download,
    "grpc-upload": grpc_upload,
    "http-serve": http_serve,
    "http-download": http_download,
    "http-upload": http_upload,
}


# --- the driver ------------------------------------------------------------------------------


def _command(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.transfer", role, *args]


class _Server:
    def __init__(self, role: str, *args: str) -> None:
        self.process = subprocess.Popen(
            _command(role, *args),
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "ready":
            self.stop()
            raise RuntimeError(f"{role} did not start")
        self.address = line[1]

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _client(role: str, *args: str) -> tuple[float, float]:
    """Runs one transfer end to end; returns (MiB/s, peak RSS MiB)."""
    result = subprocess.run(
        _command(role, *args), cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return SIZE / 2**20 / report["seconds"], report["rss_mib"]


def _make_source(path: Path) -> str:
    rng = random.Random(1)
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(SIZE // BLOCK):
            block = rng.randbytes(BLOCK)
            hasher.update(block)
            out.write(block)
    return hasher.hexdigest()


def _settle(*dirs: Path) -> None:
    """Empties the receiving dirs and flushes dirty pages, so a round starts clean."""
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
    os.sync()


def run() -> list[Figure]:
    """The figures. With VCNODE_BENCH_DURABLE=1, also (as context on stderr, not a figure) an
    aiohttp baseline that fsyncs the received file before it reports; measured in the same
    rounds."""
    durable = os.environ.get("VCNODE_BENCH_DURABLE") == "1"
    where = os.environ.get("VCNODE_BENCH_DIR", "/tmp")
    with tempfile.TemporaryDirectory(prefix="vcnode-bench-transfer-", dir=where) as tmp:
        root = Path(tmp)
        source = root / "source.bin"
        sha256 = _make_source(source)
        size = str(SIZE)
        received = root / "received"
        received.mkdir()
        credentials = root / "tls"
        _make_credentials(credentials)
        (root / "http-received").mkdir()
        speeds: dict[str, list[float]] = {}
        client_rss: list[float] = []
        with contextlib.ExitStack() as stack:
            grpc_server = _Server(
                "grpc-serve", str(root / "server-store"), str(source), str(credentials)
            )
            stack.callback(grpc_server.stop)
            http_server = _Server("http-serve", str(root / "http-received"), str(source))
            stack.callback(http_server.stop)
            servers = {"grpc": grpc_server, "http": http_server}

            def transfer(kind: str, direction: str, measured: bool = True) -> None:
                server = servers[kind.removesuffix("+fsync")]
                args: tuple[str, ...]
                if direction == "download":
                    args = (server.address, sha256, size, str(received))
                else:
                    args = (server.address, str(source), sha256, size)
                if kind.endswith("+fsync"):
                    args = (*args, "fsync")
                if kind == "grpc":
                    args = (*args, str(credentials))
                speed, rss = _client(f"{kind.removesuffix('+fsync')}-{direction}", *args)
                if direction == "upload":
                    server.ask(f"delete {sha256}")
                _settle(received)
                if measured:
                    speeds.setdefault(f"{kind}_{direction}", []).append(speed)
                    if kind == "grpc":
                        client_rss.append(rss)
                        print(
                            f"# transfer grpc {direction} client peak RSS {rss:.0f} MiB",
                            file=sys.stderr,
                        )

            kinds = ["grpc", "http", *(["http+fsync"] if durable else [])]
            _settle(received)
            for direction in ("download", "upload"):
                if direction == "upload":
                    # The server held the blob to serve it; now it has to receive it.
                    grpc_server.ask(f"delete {sha256}")
                # One unmeasured round each: the first run after start-up pays for memory the
                # machine has not touched yet, whoever runs first.
                for kind in kinds:
                    transfer(kind, direction, measured=False)
                for round_ in range(ROUNDS):
                    for kind in kinds if round_ % 2 else reversed(kinds):
                        transfer(kind, direction)
            server_rss = float(grpc_server.ask("rss"))
    median = {name: statistics.median(values) for name, values in speeds.items()}
    for name, values in sorted(speeds.items()):
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"# transfer {name}: median {median[name]:.0f} MiB/s ({shown})", file=sys.stderr)
    download = median["grpc_download"] / median["http_download"]
    upload = median["grpc_upload"] / median["http_upload"]
    if durable:
        for direction in ("download", "upload"):
            ratio = median[f"grpc_{direction}"] / median[f"http+fsync_{direction}"]
            print(f"# transfer {direction} ratio against http+fsync: {ratio:.3g}", file=sys.stderr)
    return [
        Figure("transfer_download_ratio", download, "x", ">=", 1.0),
        Figure("transfer_upload_ratio", upload, "x", ">=", 1.0),
        Figure("transfer_peak_rss_server", server_rss, "MiB", "<=", 150),
        Figure("transfer_peak_rss_client", max(client_rss), "MiB", "<=", 150),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 1:  # `python -m benchmarks.transfer`: the figures, as make bench shows
        for figure in run():
            print(figure.line(), flush=True)
    else:
        role, *arguments = sys.argv[1:]
        asyncio.run(ROLES[role](*arguments))
