"""Blob transfer over real gRPC on loopback (server in this process, port picked by the OS):
round trips, resuming after a broken stream, and every refusal leaving nothing behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from daemon.errors import NodeError, NotFoundError
from daemon.rpc.v1 import transfer_pb2, transfer_pb2_grpc
from daemon.transfer import client, wire
from daemon.transfer.blobstore import BlobStore
from daemon.transfer.chunks import CHUNK_BYTES
from daemon.transfer.errors import (
    ContentMismatchError,
    InvalidBlobIdError,
    PolicyRefusedError,
    TransferError,
)
from daemon.transfer.servicer import (
    UPLOADS_PER_PEER,
    AllowAll,
    TransferPolicy,
    TransferServicer,
    add_transfer_service,
)
from daemon.transport.access import AccessPolicy, Caller
from daemon.transport.channels import Dial, bind, create_server, open_channel
from daemon.trust.pki import id_name
from tests.blob_files import files_under
from tests.trust import credential

pytestmark = pytest.mark.integration

MiB = 1 << 20
DATA = os.urandom(3 * CHUNK_BYTES + CHUNK_BYTES // 2)
SHA = hashlib.sha256(DATA).hexdigest()
BAD_IDS = ["../../x", "", SHA.upper(), SHA[:63], SHA + "\n", "z" * 64]


def make_store(root: Path, *, max_blob: int = 64 * MiB, quota: int = 256 * MiB) -> BlobStore:
    return BlobStore(root, max_blob_bytes=max_blob, quota_bytes=quota)


@contextlib.asynccontextmanager
async def serving(servicer: TransferServicer) -> AsyncIterator[Dial]:
    """A manager's transfer service on loopback; yields how a volunteer dials it."""
    server_credential = credential(["manager"])
    server = create_server(AccessPolicy(server_credential.identity.node_id))
    add_transfer_service(server, servicer)
    port = bind(server, "127.0.0.1:0", server_credential)
    assert port, "could not bind a loopback port"
    await server.start()
    try:
        manager = id_name(server_credential.identity.node_id)
        yield Dial(f"127.0.0.1:{port}", credential(["volunteer"]), manager)
    finally:
        await server.stop(None)


def data_file(tmp_path: Path, data: bytes = DATA) -> Path:
    path = tmp_path / "local.bin"
    path.write_bytes(data)
    return path


def chunk_message(offset: int, data: bytes, crc32: int | None = None) -> transfer_pb2.UploadMessage:
    crc = zlib.crc32(data) if crc32 is None else crc32
    return transfer_pb2.UploadMessage(chunk=transfer_pb2.Chunk(offset=offset, data=data, crc32=crc))


def header_message(sha256: str, size: int, offset: int = 0) -> transfer_pb2.UploadMessage:
    return transfer_pb2.UploadMessage(
        header=transfer_pb2.UploadHeader(sha256=sha256, size=size, offset=offset, purpose="t")
    )


async def raw_upload(
    address: Dial, messages: list[transfer_pb2.UploadMessage]
) -> grpc.aio.AioRpcError:
    """Sends hand-made upload messages; returns the refusal."""
    async with open_channel(address.address, address.credential) as channel:
        stub = transfer_pb2_grpc.TransferServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Upload(iter(messages))
    return refused.value


class Deny:
    async def may_download(self, sha256: str, caller: Caller) -> bool:
        return False

    async def may_upload(self, sha256: str, size: int, purpose: str, caller: Caller) -> bool:
        return False


class Recording(AllowAll):
    def __init__(self) -> None:
        self.uploads: list[tuple[str, int, str]] = []

    async def may_upload(self, sha256: str, size: int, purpose: str, caller: Caller) -> bool:
        self.uploads.append((sha256, size, purpose))
        return True


class CutOffOnce(TransferServicer):
    """Breaks the first Download and the first Upload after `after` chunks, as a dropped
    connection would, and records where each call started."""

    def __init__(self, store: BlobStore, policy: TransferPolicy, after: int) -> None:
        super().__init__(store, policy)
        self.after = after
        self.download_offsets: list[int] = []
        self.upload_offsets: list[int] = []

    async def Download(
        self,
        request: transfer_pb2.DownloadRequest,
        context: grpc.aio.ServicerContext[transfer_pb2.DownloadRequest, bytes],
    ) -> AsyncIterator[bytes]:
        self.download_offsets.append(request.offset)
        first = len(self.download_offsets) == 1
        sent = 0
        async for chunk in super().Download(request, context):
            if first and sent == self.after:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection dropped (test)")
            yield chunk
            sent += 1

    async def Upload(
        self,
        request_iterator: AsyncIterator[wire.UploadPart],
        context: grpc.aio.ServicerContext[wire.UploadPart, transfer_pb2.UploadReply],
    ) -> transfer_pb2.UploadReply:
        first = not self.upload_offsets

        async def cut() -> AsyncIterator[wire.UploadPart]:
            chunks = 0
            async for message in request_iterator:
                if isinstance(message, transfer_pb2.UploadHeader):
                    self.upload_offsets.append(message.offset)
                elif first and chunks == self.after:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "connection dropped (test)")
                else:
                    chunks += 1
                yield message

        return await super().Upload(cut(), context)


class CorruptOnce(TransferServicer):
    """Flips a bit of the second chunk's CRC in the first Download."""

    def __init__(self, store: BlobStore, policy: TransferPolicy) -> None:
        super().__init__(store, policy)
        self.download_offsets: list[int] = []

    async def Download(
        self,
        request: transfer_pb2.DownloadRequest,
        context: grpc.aio.ServicerContext[transfer_pb2.DownloadRequest, bytes],
    ) -> AsyncIterator[bytes]:
        self.download_offsets.append(request.offset)
        first = len(self.download_offsets) == 1
        async for message in super().Download(request, context):
            chunk = wire.parse_chunk(message)
            if first and chunk.offset == CHUNK_BYTES:
                message = wire.encode_chunk(chunk.offset, chunk.data, chunk.crc32 ^ 1)
            yield message


@pytest.fixture
def server_store(tmp_path: Path) -> BlobStore:
    return make_store(tmp_path / "server")


@pytest.fixture
def client_store(tmp_path: Path) -> BlobStore:
    return make_store(tmp_path / "client")


# --- round trips ----------------------------------------------------------------------------


async def test_download_of_a_multi_chunk_blob(
    server_store: BlobStore, client_store: BlobStore
) -> None:
    await server_store.put_bytes(DATA)
    async with serving(TransferServicer(server_store, AllowAll())) as address:
        path = await client.download(address, SHA, len(DATA), client_store)
    assert len(DATA) > 3 * CHUNK_BYTES
    assert path == await client_store.path(SHA)
    assert path.read_bytes() == DATA


async def test_upload_of_a_multi_chunk_blob_then_download_it_back(
    tmp_path: Path, server_store: BlobStore, client_store: BlobStore
) -> None:
    policy = Recording()
    async with serving(TransferServicer(server_store, policy)) as address:
        reply = await client.upload(address, data_file(tmp_path), SHA, len(DATA), "task-7")
        async with open_channel(address.address, address.credential) as channel:
            path = await client.download(channel, SHA, len(DATA), client_store)
    assert reply == (SHA, len(DATA))
    assert policy.uploads == [(SHA, len(DATA), "task-7")]
    assert (await server_store.path(SHA)).read_bytes() == DATA
    assert path.read_bytes() == DATA


async def test_upload_of_a_blob_held_already_sends_nothing(
    tmp_path: Path, server_store: BlobStore
) -> None:
    await server_store.put_bytes(DATA)
    policy = Recording()
    async with serving(TransferServicer(server_store, policy)) as address:
        reply = await client.upload(address, data_file(tmp_path), SHA, len(DATA), "t")
    assert reply == (SHA, len(DATA))
    assert policy.uploads == [], "Stat said complete: no Upload call was made"


async def test_stat_reports_complete_and_partial(server_store: BlobStore) -> None:
    await server_store.put_bytes(DATA)
    other = hashlib.sha256(b"abc").hexdigest()
    async with server_store.receive(other, 3) as writer:
        await writer.append(b"ab")
    async with (
        serving(TransferServicer(server_store, AllowAll())) as address,
        open_channel(address.address, address.credential) as channel,
    ):
        stub = transfer_pb2_grpc.TransferServiceStub(channel)
        complete = await stub.Stat(transfer_pb2.StatRequest(sha256=SHA))
        partial = await stub.Stat(transfer_pb2.StatRequest(sha256=other))
    assert (complete.complete, complete.size) == (True, len(DATA))
    assert (partial.complete, partial.partial_size) == (False, 2)


async def test_generated_stubs_download_and_upload_through_the_raw_service(
    tmp_path: Path, server_store: BlobStore
) -> None:
    # The service reads and writes chunk messages itself: protobuf ends must not notice.
    await server_store.put_bytes(DATA)
    other = os.urandom(CHUNK_BYTES + 5)
    other_sha = hashlib.sha256(other).hexdigest()
    messages = [
        header_message(other_sha, len(other)),
        chunk_message(0, other[:CHUNK_BYTES]),
        chunk_message(CHUNK_BYTES, other[CHUNK_BYTES:]),
    ]
    async with (
        serving(TransferServicer(server_store, AllowAll())) as address,
        open_channel(address.address, address.credential) as channel,
    ):
        stub = transfer_pb2_grpc.TransferServiceStub(channel)
        chunks = [c async for c in stub.Download(transfer_pb2.DownloadRequest(sha256=SHA))]
        reply = await stub.Upload(iter(messages))
    assert [c.offset for c in chunks] == list(range(0, len(DATA), CHUNK_BYTES))
    assert all(zlib.crc32(c.data) == c.crc32 for c in chunks)
    assert b"".join(c.data for c in chunks) == DATA
    assert (reply.sha256, reply.size) == (other_sha, len(other))
    assert (await server_store.path(other_sha)).read_bytes() == other


# --- resuming -------------------------------------------------------------------------------


async def test_download_cut_off_resumes_from_the_offset_held(
    server_store: BlobStore, client_store: BlobStore
) -> None:
    await server_store.put_bytes(DATA)
    servicer = CutOffOnce(server_store, AllowAll(), after=2)
    async with serving(servicer) as address:
        path = await client.download(address, SHA, len(DATA), client_store)
    assert servicer.download_offsets == [0, 2 * CHUNK_BYTES]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA


async def test_download_resumes_from_a_partial_held_before(
    server_store: BlobStore, client_store: BlobStore
) -> None:
    await server_store.put_bytes(DATA)
    held = CHUNK_BYTES + 1000
    async with client_store.receive(SHA, len(DATA)) as writer:
        await writer.append(DATA[:held])
    servicer = CutOffOnce(server_store, AllowAll(), after=1000)
    async with serving(servicer) as address:
        path = await client.download(address, SHA, len(DATA), client_store)
    assert servicer.download_offsets == [held]
    assert path.read_bytes() == DATA


async def test_download_retries_a_chunk_that_fails_its_crc(
    server_store: BlobStore, client_store: BlobStore
) -> None:
    await server_store.put_bytes(DATA)
    servicer = CorruptOnce(server_store, AllowAll())
    async with serving(servicer) as address:
        path = await client.download(address, SHA, len(DATA), client_store)
    # The first chunk was good and kept; the damaged second one was not written.
    assert servicer.download_offsets == [0, CHUNK_BYTES]
    assert path.read_bytes() == DATA


async def test_upload_cut_off_resumes_from_the_offset_held(
    tmp_path: Path, server_store: BlobStore
) -> None:
    servicer = CutOffOnce(server_store, AllowAll(), after=2)
    async with serving(servicer) as address:
        reply = await client.upload(address, data_file(tmp_path), SHA, len(DATA), "t")
    assert reply == (SHA, len(DATA))
    assert servicer.upload_offsets[0] == 0
    # The broken call may still be closing its file when the client asks Stat again; then
    # the receiver refuses the stale offset and the client asks once more.
    assert servicer.upload_offsets[-1] == 2 * CHUNK_BYTES
    assert (await server_store.path(SHA)).read_bytes() == DATA


async def test_upload_resumes_from_what_the_receiver_holds(
    tmp_path: Path, server_store: BlobStore
) -> None:
    held = 2 * CHUNK_BYTES + 7
    async with server_store.receive(SHA, len(DATA)) as writer:
        await writer.append(DATA[:held])
    servicer = CutOffOnce(server_store, AllowAll(), after=1000)
    async with serving(servicer) as address:
        await client.upload(address, data_file(tmp_path), SHA, len(DATA), "t")
    assert servicer.upload_offsets == [held]
    assert (await server_store.path(SHA)).read_bytes() == DATA


# --- refusals, with nothing written ---------------------------------------------------------


async def test_upload_with_a_bad_chunk_crc_is_refused_and_nothing_past_it_written(
    tmp_path: Path, server_store: BlobStore
) -> None:
    pieces = [DATA[i : i + CHUNK_BYTES] for i in range(0, len(DATA), CHUNK_BYTES)]
    messages = [
        header_message(SHA, len(DATA)),
        chunk_message(0, pieces[0]),
        chunk_message(CHUNK_BYTES, pieces[1], zlib.crc32(pieces[1]) ^ 0xFF),
        chunk_message(2 * CHUNK_BYTES, pieces[2]),
        chunk_message(3 * CHUNK_BYTES, pieces[3]),
    ]
    async with serving(TransferServicer(server_store, AllowAll())) as address:
        refused = await raw_upload(address, messages)
    assert refused.code() == grpc.StatusCode.DATA_LOSS
    assert "fails its CRC-32 check" in (refused.details() or "")
    assert not await server_store.has(SHA)
    assert (tmp_path / "server" / "partial" / SHA).read_bytes() == pieces[0]


async def test_upload_with_a_gap_between_chunks_is_refused(
    tmp_path: Path, server_store: BlobStore
) -> None:
    messages = [
        header_message(SHA, len(DATA)),
        chunk_message(0, DATA[:CHUNK_BYTES]),
        chunk_message(2 * CHUNK_BYTES, DATA[2 * CHUNK_BYTES : 3 * CHUNK_BYTES]),
    ]
    async with serving(TransferServicer(server_store, AllowAll())) as address:
        refused = await raw_upload(address, messages)
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"where {CHUNK_BYTES} was expected" in (refused.details() or "")
    assert not await server_store.has(SHA)
    assert await server_store.partial_size(SHA) == CHUNK_BYTES


async def test_upload_with_a_wrong_checksum_is_refused_and_discarded(
    tmp_path: Path, server_store: BlobStore
) -> None:
    wrong = hashlib.sha256(b"not these bytes").hexdigest()
    async with serving(TransferServicer(server_store, AllowAll())) as address:
        with pytest.raises(ContentMismatchError, match="not to the blob's id; discarded"):
            await client.upload(address, data_file(tmp_path), wrong, len(DATA), "t")
    assert not await server_store.has(wrong)
    assert files_under(tmp_path / "server") == []


async def test_download_whose_bytes_do_not_match_the_id_leaves_nothing(
    tmp_path: Path, server_store: BlobStore, client_store: BlobStore
) -> None:
    # A server whose stored blob is damaged: the client's store refuses it.
    await server_store.put_bytes(DATA)
    (await server_store.path(SHA)).write_bytes(DATA[::-1])
    async with serving(TransferServicer(server_store, AllowAll())) as address:
        with pytest.raises(ContentMismatchError, match="discarded"):
            await client.download(address, SHA, len(DATA), client_store)
    assert files_under(tmp_path / "client") == []


@pytest.mark.parametrize("blob_id", BAD_IDS)
async def test_invalid_ids_are_refused_by_every_call(
    tmp_path: Path, server_store: BlobStore, blob_id: str
) -> None:
    async with (
        serving(TransferServicer(server_store, AllowAll())) as address,
        open_channel(address.address, address.credential) as channel,
    ):
        stub = transfer_pb2_grpc.TransferServiceStub(channel)
        upload = await raw_upload(address, [header_message(blob_id, 3), chunk_message(0, b"abc")])
        with pytest.raises(grpc.aio.AioRpcError) as stat:
            await stub.Stat(transfer_pb2.StatRequest(sha256=blob_id))
        with pytest.raises(grpc.aio.AioRpcError) as download:
            await stub.Download(transfer_pb2.DownloadRequest(sha256=blob_id)).read()
    refusals = [upload, stat.value, download.value]
    assert [r.code() for r in refusals] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert all("is not a blob id" in (r.details() or "") for r in refusals)
    assert files_under(tmp_path) == []


async def test_clients_refuse_invalid_ids_before_calling(
    tmp_path: Path, client_store: BlobStore
) -> None:
    # Nothing listens at this address: an RPC would fail differently.
    with pytest.raises(InvalidBlobIdError):
        await client.download(Dial("127.0.0.1:9", credential([])), "../../x", 3, client_store)
    with pytest.raises(InvalidBlobIdError):
        await client.upload(
            Dial("127.0.0.1:9", credential([])), data_file(tmp_path), "../../x", len(DATA), "t"
        )
    assert files_under(tmp_path / "client") == []


async def test_blob_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "server", max_blob=2 * MiB)
    async with serving(TransferServicer(store, AllowAll())) as address:
        with pytest.raises(TransferError, match=r"over this node's limit of 2\.0 MiB per blob"):
            await client.upload(address, data_file(tmp_path), SHA, len(DATA), "t")
    assert files_under(tmp_path / "server") == []


async def test_upload_over_the_quota_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "server", quota=len(DATA) + MiB)
    first = os.urandom(2 * MiB)
    await store.put_bytes(first)
    async with serving(TransferServicer(store, AllowAll())) as address:
        with pytest.raises(TransferError, match="does not fit") as refused:
            await client.upload(address, data_file(tmp_path), SHA, len(DATA), "t")
    assert "quota" in str(refused.value)
    assert files_under(tmp_path / "server" / "partial") == []
    assert not await store.has(SHA)


async def test_download_into_a_full_store_is_refused_before_calling(
    server_store: BlobStore, tmp_path: Path
) -> None:
    await server_store.put_bytes(DATA)
    small = make_store(tmp_path / "client", quota=MiB)
    async with serving(TransferServicer(server_store, AllowAll())) as address:
        with pytest.raises(TransferError, match="does not fit"):
            await client.download(address, SHA, len(DATA), small)
    assert files_under(tmp_path / "client") == []


async def test_download_of_an_unknown_blob_is_not_found(
    tmp_path: Path, server_store: BlobStore, client_store: BlobStore
) -> None:
    async with serving(TransferServicer(server_store, AllowAll())) as address:
        with pytest.raises(NotFoundError, match=f"no blob {SHA} here"):
            await client.download(address, SHA, len(DATA), client_store)
        async with open_channel(address.address, address.credential) as channel:
            stub = transfer_pb2_grpc.TransferServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Download(transfer_pb2.DownloadRequest(sha256=SHA)).read()
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert files_under(tmp_path / "client") == []


async def test_policy_refuses_downloads_and_uploads(
    tmp_path: Path, server_store: BlobStore, client_store: BlobStore
) -> None:
    await server_store.put_bytes(DATA)
    other = os.urandom(MiB)
    other_sha = hashlib.sha256(other).hexdigest()
    async with serving(TransferServicer(server_store, Deny())) as address:
        with pytest.raises(PolicyRefusedError, match="does not serve blob"):
            await client.download(address, SHA, len(DATA), client_store)
        with pytest.raises(PolicyRefusedError, match="does not accept blob"):
            await client.upload(address, data_file(tmp_path, other), other_sha, MiB, "t")
        async with open_channel(address.address, address.credential) as channel:
            stub = transfer_pb2_grpc.TransferServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Download(transfer_pb2.DownloadRequest(sha256=SHA)).read()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert files_under(tmp_path / "client") == []
    assert files_under(tmp_path / "server" / "partial") == []
    assert not await server_store.has(other_sha)


async def test_download_gives_up_when_nobody_answers(
    tmp_path: Path, client_store: BlobStore
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NodeError, match="no transfer service answered"):
        await client.download(
            Dial(f"127.0.0.1:{port}", credential([])), SHA, len(DATA), client_store, retries=1
        )
    assert files_under(tmp_path / "client") == []


async def test_one_peer_may_have_only_so_many_uploads_going(tmp_path: Path) -> None:
    """Uploads that hang after their header hold streams and locks: one member gets at most
    UPLOADS_PER_PEER at once; another member is not held up by it."""
    store = make_store(tmp_path / "server")
    blobs = [os.urandom(64) for _ in range(UPLOADS_PER_PEER + 1)]
    async with (
        serving(TransferServicer(store, AllowAll())) as peer,
        open_channel(peer.address, peer.credential) as channel,
    ):
        stub = transfer_pb2_grpc.TransferServiceStub(channel)
        hanging = []
        for blob in blobs[:UPLOADS_PER_PEER]:
            call = stub.Upload()
            await call.write(header_message(hashlib.sha256(blob).hexdigest(), len(blob)))
            await call.initial_metadata()  # the receiver took the header
            hanging.append(call)
        last = blobs[-1]
        refused = await raw_upload(
            peer, [header_message(hashlib.sha256(last).hexdigest(), len(last))]
        )
        other = Dial(peer.address, credential(["volunteer"]))
        sha256, size = await client.upload(
            other, data_file(tmp_path, last), hashlib.sha256(last).hexdigest(), len(last), "t"
        )
        for call in hanging:
            call.cancel()
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{UPLOADS_PER_PEER} uploads going here already" in str(refused.details())
    assert (sha256, size) == (hashlib.sha256(last).hexdigest(), len(last))
