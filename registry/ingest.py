"""The rules of blob ingest: monolithic, streamed, chunked and resumable uploads, and mounts.

No upload state lives only in the process: the metadata store holds each upload's size and its
resumable SHA-256 state after the last chunk (and a row per chunk), and the driver holds the bytes,
so every request of one upload may land on a different process or replica and no byte is hashed
twice. A chunk is an append to the upload's data at the upload's size (`Driver.append`), recorded
only if the upload still has that size; it reads and writes only the upload's row, so it costs the
same however many came before. The final PUT reads the chunk rows, once, and seals their pieces into
the blob (`Driver.seal`: a rename on disk, a join on the server in S3). The same algorithm runs on
every driver, so a client gets the same answer on each. A blob is visible only after its digest
matched, its bytes were committed and its row was written.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from registry.errors import (
    BlobBytes,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
    SizeInvalid,
    UploadData,
    storage_errors,
)
from registry.layout import blob_key, upload_data_key, upload_prefix, upload_staging_key
from registry.names import Digest
from registry.resumable import Sha256
from registry.urls import upload_path, upload_range
from storage.drivers import Driver, NotFound, Piece, PieceWriter, Writer
from storage.metadata import DELETING, BlobCollecting, Chunk, Metadata, OutboxEvent, Upload

Body = AsyncIterator[bytes]
# The event outbox rows reporting a blob (digest, size, the repository it was mounted from) that is
# being linked; written in the transaction that links it (registry/events/).
Announce = Callable[[str, int, str | None], Sequence[OutboxEvent]]
COLLECTION_WAIT_S = 30.0


class Hasher(Protocol):
    """What ingest needs of a hash: hashlib's objects and the resumable Sha256 alike."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range as sent in an upload's `Content-Range`."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


async def _stream(body: Body, writer: Writer | PieceWriter | None, hasher: Hasher | None) -> int:
    """Hash `body` (if `hasher`) and write it to `writer` (if any) as it arrives; returns its length.

    Hashing runs here, on the event loop (it releases the GIL for the writer's thread): measured, a
    worker thread for it was no faster, the threads then queue for the GIL.
    """
    size = 0
    async for data in body:
        if data:
            size += len(data)
            if hasher is not None:
                hasher.update(data)
            if writer is not None:
                await writer.write(data)
    return size


def _resumed_hash(upload: Upload) -> Sha256 | None:
    """The upload's SHA-256 so far, ready to continue; None when a chunk came without a state."""
    if not Sha256.available:
        return None
    if upload.size == 0:  # no chunk yet (an empty chunk is never recorded)
        return Sha256()
    try:
        return Sha256(bytes.fromhex(upload.hash_state))
    except ValueError:
        return None


def _check_start(upload: Upload, content_range: ByteRange | None) -> None:
    """A chunk's `Content-Range` must start where the upload ends (416 otherwise)."""
    if content_range is not None and content_range.start != upload.size:
        raise RangeInvalid(
            {"expected_start": upload.size, "got": content_range.start},
            headers={"Range": upload_range(upload.size), "Location": upload_path(upload.repository, upload.id)},
        )


def _pieces(upload: Upload, chunks: list[Chunk]) -> list[Piece]:
    """The pieces of the upload's data its `chunks` recorded, in order; BlobUploadInvalid unless they
    follow each other from 0 to the upload's size."""
    end = 0
    for chunk in chunks:
        if chunk.start != end:
            break
        end += chunk.size
    else:
        if end == upload.size:
            return [Piece(chunk.key, chunk.start, chunk.size) for chunk in chunks]
    raise BlobUploadInvalid({"reason": "the upload's chunks are not contiguous"})


def _verify(digest: Digest, hasher: Hasher) -> None:
    if hasher.hexdigest() != digest.encoded:
        raise DigestInvalid({"expected": str(digest), "computed": f"{digest.algorithm}:{hasher.hexdigest()}"})


class Uploads:
    """Upload sessions over a metadata store and a driver."""

    def __init__(self, metadata: Metadata, driver: Driver):
        self.metadata, self.driver = metadata, driver

    async def start(self, repository: str) -> str:
        """Open an upload session in `repository`; returns its id."""
        upload_id = str(uuid.uuid4())
        await self.metadata.create_upload(upload_id, repository)
        return upload_id

    async def status(self, repository: str, upload_id: str) -> Upload:
        """The upload's state (its row, not its chunks); raises BlobUploadUnknown when it is not open
        in `repository`."""
        try:
            uuid.UUID(upload_id)
        except ValueError:
            raise BlobUploadUnknown({"upload": upload_id[:100]}) from None
        upload = await self.metadata.get_upload(upload_id)
        if upload is None or upload.repository != repository:
            raise BlobUploadUnknown({"upload": upload_id})
        return upload

    async def cancel(self, repository: str, upload_id: str) -> None:
        """Abandon an upload and delete its bytes."""
        await self.status(repository, upload_id)
        await self.metadata.delete_upload(upload_id)
        await self.driver.delete(upload_prefix(upload_id))

    async def mount(
        self,
        repository: str,
        digest: Digest,
        source: str | None,
        may_pull: Callable[[str], bool],
        announce: Announce | None = None,
    ) -> bool:
        """Link a blob already stored into `repository` without moving bytes (reported by `announce`).

        With `source`, the blob must be in that repository; without, in any repository. Either way
        the caller must be allowed to pull from it (`may_pull`). Returns False when not, and the
        client then uploads the blob.
        """
        if source is not None:
            sources = [source] if may_pull(source) else []
        else:
            sources = [r for r in await self.metadata.repositories_with_blob(str(digest)) if may_pull(r)]
        for candidate in sources:
            size = await self.metadata.blob_size(candidate, str(digest))
            if size is not None:
                try:
                    events = () if announce is None else announce(str(digest), size, candidate)
                    await self.metadata.link_blob(repository, str(digest), size, events)
                except BlobCollecting:
                    return False
                return True
        return False

    async def keep_if_stored(self, digest: str) -> bool:
        """Keep the bytes of `digest` for a grace period at least, if they are stored; returns whether
        they are. While the collector is deleting them this waits (so that new bytes are never written
        under a key that is being deleted), and raises BlobCollecting if that lasts COLLECTION_WAIT_S."""
        deadline = time.monotonic() + COLLECTION_WAIT_S
        while (state := await self.metadata.reserve_blob(digest)) == DELETING:
            if time.monotonic() > deadline:
                raise BlobCollecting(digest)
            await asyncio.sleep(0.1)
        return state is not None

    async def monolithic(self, repository: str, digest: Digest, body: Body, announce: Announce | None = None) -> None:
        """Store a whole blob sent in one request, verified while it streams in (reported by `announce`)."""
        with storage_errors(BlobBytes(str(digest))):
            size = await self._store_whole(digest, body)
            events = () if announce is None else announce(str(digest), size, None)
            await self.metadata.link_blob(repository, str(digest), size, events)

    async def _store_whole(self, digest: Digest, body: Body, length: int | None = None) -> int:
        """Store `body` as blob `digest` once it matched (and had `length` bytes, if given); returns its size."""
        hasher = digest.hasher()
        # A blob stored once already is only verified; nothing is kept.
        writer = None if await self.keep_if_stored(str(digest)) else await self.driver.writer(blob_key(str(digest)))
        try:
            size = await _stream(body, writer, hasher)
            if length is not None and size != length:
                raise SizeInvalid({"content_range": length, "received": size})
            _verify(digest, hasher)
            if writer is not None:
                await writer.commit()
        finally:
            if writer is not None:
                await writer.cancel()
        return size

    async def append(self, repository: str, upload_id: str, body: Body, content_range: ByteRange | None) -> int:
        """Append the request body to the upload as one chunk; returns the upload's new size.

        `content_range`, when given, must start where the upload ends (else RangeInvalid, 416) and
        match the body's length. Of two chunks sent at once at the same offset, the first to be
        recorded counts and the other is refused with RangeInvalid once it arrived, its bytes dropped.
        """
        upload = await self.status(repository, upload_id)
        _check_start(upload, content_range)
        with storage_errors(UploadData(repository, upload_id)):
            return await self._append(upload, body, content_range)

    async def _append(self, upload: Upload, body: Body, content_range: ByteRange | None) -> int:
        hasher = _resumed_hash(upload)
        writer = await self.driver.append(upload_data_key(upload.id), upload.size)
        try:
            size = await _stream(body, writer, hasher)
            if content_range is not None and size != content_range.length:
                raise SizeInvalid({"content_range": content_range.length, "received": size})
            if size == 0:
                return upload.size
            piece = await writer.commit()
        finally:
            await writer.cancel()
        state = "" if hasher is None else hasher.state().hex()
        if await self.metadata.add_chunk(upload.id, Chunk(piece.start, piece.size, piece.key, state)):
            return piece.end
        await writer.discard()
        current = await self.status(upload.repository, upload.id)
        raise RangeInvalid(
            {"reason": "the upload moved on concurrently"},
            headers={"Range": upload_range(current.size), "Location": upload_path(upload.repository, upload.id)},
        )

    async def finish(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        body: Body | None = None,
        content_range: ByteRange | None = None,
        announce: Announce | None = None,
    ) -> int:
        """Close the upload as blob `digest` once its bytes, `body` (the last chunk) included, match;
        returns the blob's size. The linked blob is reported by `announce`.

        On a mismatch the upload is cancelled and DigestInvalid raised; nothing becomes visible. A
        chunk recorded meanwhile makes it BlobUploadInvalid, and the upload stays open.
        """
        upload = await self.status(repository, upload_id)
        if body is not None and upload.size == 0:
            _check_start(upload, content_range)  # the whole blob in this request: stored as it streams in
            try:
                with storage_errors(BlobBytes(str(digest))):
                    size = await self._store_whole(
                        digest, body, None if content_range is None else content_range.length
                    )
            except DigestInvalid:
                await self.cancel(repository, upload_id)
                raise
            await self._finish_upload(upload, str(digest), size, announce)  # it had no chunks: nothing else to delete
            return size
        if body is not None:
            await self.append(repository, upload_id, body, content_range)
            upload = await self.status(repository, upload_id)
        pieces = _pieces(upload, await self.metadata.upload_chunks(upload_id))
        data = UploadData(repository, upload_id)
        staged = None
        try:
            hasher: Hasher | None = _resumed_hash(upload) if digest.algorithm == "sha256" else None
            if hasher is None:  # no hash state: sealed where it stays invisible and read once more
                staged = upload_staging_key(upload_id)
                with storage_errors(data):
                    await self._seal_to(upload, pieces, staged)
                    hasher = digest.hasher()
                    await _stream(self.driver.reader(staged), None, hasher)
            _verify(digest, hasher)
        except DigestInvalid:
            await self.cancel(repository, upload_id)
            raise
        with storage_errors(BlobBytes(str(digest))):
            stored = await self.keep_if_stored(str(digest))
        if not stored:
            with storage_errors(data):
                if staged is None:
                    await self._seal_to(upload, pieces, blob_key(str(digest)))
                else:
                    await self.driver.move(staged, blob_key(str(digest)))
        await self._finish_upload(upload, str(digest), upload.size, announce)
        await self.driver.delete(upload_prefix(upload_id))
        return upload.size

    async def _seal_to(self, upload: Upload, pieces: list[Piece], key: str) -> None:
        """Seal the upload's `pieces` under `key`. Idempotent, so that a PUT retried after a crash
        between the seal and the upload's end finds the bytes in place; NotFound when they are gone."""
        try:
            await self.driver.seal(upload_data_key(upload.id), pieces, key)
        except NotFound:
            if (await self.driver.stat(key)).size != upload.size:
                raise
            # sealed by an earlier attempt

    async def _finish_upload(self, upload: Upload, digest: str, size: int, announce: Announce | None) -> None:
        """Link blob `digest` of `size` bytes into the upload's repository and forget the upload, if it
        still has the size it had when read (`upload`): no chunk was added meanwhile."""
        with storage_errors(BlobBytes(digest)):
            events = () if announce is None else announce(digest, size, None)
            finished = await self.metadata.finish_upload(
                upload.id, upload.repository, digest, size, upload.size, events
            )
        if not finished:
            await self.status(upload.repository, upload.id)  # BlobUploadUnknown when another request ended it
            raise BlobUploadInvalid({"reason": "a chunk was added while the upload was being finished"})
