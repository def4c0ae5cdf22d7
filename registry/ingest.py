"""The rules of blob uploads: monolithic, streamed, chunked and resumable, and cross-repository mounts.

No upload state lives only in the process: the index holds each upload's size and its resumable
SHA-256 state after the last chunk (and a row per chunk), and the driver holds the bytes, so every
request of one upload may land on a different process or replica and no byte is hashed twice. A
chunk reads and writes only the upload's row, so it costs the same however many came before; the
chunk rows are read once, by the final PUT, and only where they are needed. Where the driver
appends (local disk), an upload's chunks go into one object, held exclusively while a chunk is
written, that becomes the blob by a rename; elsewhere (S3) each chunk is an object and the final
PUT joins them. A blob is visible only after its digest matched, its bytes were committed and its
index row was written.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from registry.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
    SizeInvalid,
    Unavailable,
)
from registry.layout import blob_key, chunk_key, upload_data_key, upload_prefix
from registry.names import Digest
from registry.resumable import Sha256
from storage.drivers import Busy, Driver, NotFound, Writer
from storage.metadata import DELETING, BlobCollecting, Chunk, Metadata, Upload

Body = AsyncIterator[bytes]
COLLECTION_WAIT_S = 30.0
_DATA_GONE = {"reason": "the upload's data is gone; start a new upload"}


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range as sent in an upload's `Content-Range`."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def range_header(size: int) -> str:
    """The `Range` an upload of `size` bytes reports (Distribution answers `0-0` while empty)."""
    return f"0-{max(size - 1, 0)}"


async def _stream(body: Body, writer: Writer | None, hasher) -> int:
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
            headers={"Range": range_header(upload.size), "Location": location(upload.repository, upload.id)},
        )


def _check_contiguous(upload: Upload, chunks: list[Chunk]) -> None:
    offset = 0
    for chunk in chunks:
        if chunk.start != offset:
            raise BlobUploadInvalid({"reason": "the upload's chunks are not contiguous"})
        offset += chunk.size
    if offset != upload.size:
        raise BlobUploadInvalid({"reason": "the upload's chunks are not contiguous"})


class Uploads:
    """Upload sessions over an index and a driver."""

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

    async def mount(self, repository: str, digest: Digest, source: str | None, may_pull: Callable[[str], bool]) -> bool:
        """Link a blob already stored into `repository` without moving bytes.

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
                    await self.metadata.link_blob(repository, str(digest), size)
                except BlobCollecting:
                    return False
                return True
        return False

    async def stored(self, digest: str) -> bool:
        """Whether the bytes of `digest` are stored; if so they are now kept for a grace period at
        least. While the collector is deleting them this waits, so that new bytes are never written
        under a key that is being deleted."""
        deadline = time.monotonic() + COLLECTION_WAIT_S
        while (state := await self.metadata.reserve_blob(digest)) == DELETING:
            if time.monotonic() > deadline:
                raise collecting(digest)
            await asyncio.sleep(0.1)
        return state is not None

    async def _link(self, repository: str, digest: str, size: int, upload_id: str | None = None) -> None:
        try:
            if upload_id is None:
                await self.metadata.link_blob(repository, digest, size)
            else:
                await self.metadata.finish_upload(upload_id, repository, digest, size)
        except BlobCollecting:
            raise collecting(digest) from None

    async def monolithic(self, repository: str, digest: Digest, body: Body) -> None:
        """Store a whole blob sent in one request, verified while it streams in."""
        size = await self._store_whole(digest, body)
        await self._link(repository, str(digest), size)

    async def _store_whole(self, digest: Digest, body: Body, length: int | None = None) -> int:
        """Store `body` as blob `digest` once it matched (and had `length` bytes, if given); returns its size."""
        hasher = digest.hasher()
        # A blob stored once already is only verified; nothing is kept.
        writer = None if await self.stored(str(digest)) else await self.driver.writer(blob_key(str(digest)))
        try:
            size = await _stream(body, writer, hasher)
            if length is not None and size != length:
                raise SizeInvalid({"content_range": length, "received": size})
            self._verify(digest, hasher)
            if writer is not None:
                await _commit(writer)
        finally:
            if writer is not None:
                await writer.cancel()
        return size

    async def append(self, repository: str, upload_id: str, body: Body, content_range: ByteRange | None) -> int:
        """Append the request body to the upload as one chunk; returns the upload's new size.

        `content_range`, when given, must start where the upload ends (else RangeInvalid, 416) and
        match the body's length. A chunk sent while another one of the same upload is still being
        written is refused with RangeInvalid too.
        """
        upload = await self.status(repository, upload_id)
        _check_start(upload, content_range)
        if not self.driver.appends:
            key = chunk_key(upload_id, upload.size, uuid.uuid4().hex[:8])
            writer = await self.driver.writer(key, durable=False)  # durable once it becomes the blob
            return await self._append_chunk(upload, body, content_range, key, writer)
        key = upload_data_key(upload_id)
        try:
            async with self.driver.appender(key, create=upload.size == 0) as data:
                size = 0  # the upload's size after this chunk; while 0 it keeps nothing stored
                try:
                    upload = await self.status(repository, upload_id)  # as it is now that no one else writes
                    size = upload.size
                    _check_start(upload, content_range)
                    size = await self._append_chunk(upload, body, content_range, key, data.writer(upload.size))
                    return size
                finally:
                    if size == 0:  # unknown, refused, aborted or empty: remove what the appender created
                        await self.driver.delete(upload_prefix(upload_id))
        except Busy:
            raise RangeInvalid(
                {"reason": "another chunk of this upload is being written"},
                headers={"Range": range_header(upload.size), "Location": location(repository, upload_id)},
            ) from None
        except NotFound:
            raise BlobUploadInvalid(_DATA_GONE) from None

    async def _append_chunk(
        self, upload: Upload, body: Body, content_range: ByteRange | None, key: str, writer: Writer
    ) -> int:
        hasher = _resumed_hash(upload)
        try:
            size = await _stream(body, writer, hasher)
            if content_range is not None and size != content_range.length:
                raise SizeInvalid({"content_range": content_range.length, "received": size})
            if size == 0:
                return upload.size
            await _commit(writer)
        finally:
            await writer.cancel()
        state = "" if hasher is None else hasher.state().hex()
        if not await self.metadata.add_chunk(upload.id, Chunk(upload.size, size, key, state)):
            if not self.driver.appends:
                await self.driver.delete(key)
            current = await self.status(upload.repository, upload.id)
            raise RangeInvalid(
                {"reason": "the upload moved on concurrently"},
                headers={"Range": range_header(current.size), "Location": location(upload.repository, upload.id)},
            )
        return upload.size + size

    async def finish(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        body: Body | None = None,
        content_range: ByteRange | None = None,
    ) -> int:
        """Close the upload as blob `digest` once its bytes, `body` (the last chunk) included, match;
        returns the blob's size.

        On a mismatch the upload is cancelled and DigestInvalid raised; nothing becomes visible.
        """
        upload = await self.status(repository, upload_id)
        if body is not None and upload.size == 0:
            _check_start(upload, content_range)  # the whole blob in this request: stored as it streams in
            try:
                size = await self._store_whole(digest, body, None if content_range is None else content_range.length)
            except DigestInvalid:
                await self.cancel(repository, upload_id)
                raise
            await self._link(repository, str(digest), size, upload_id)  # it had no chunks: nothing else to delete
            return size
        if body is not None:
            await self.append(repository, upload_id, body, content_range)
            upload = await self.status(repository, upload_id)
        # Where each chunk is an object, the chunks are joined: their list is read, once.
        chunks = None if self.driver.appends else await self.metadata.upload_chunks(upload_id)
        if chunks is not None:
            _check_contiguous(upload, chunks)
        try:
            await self._verify_upload(upload, chunks, digest)
        except DigestInvalid:
            await self.cancel(repository, upload_id)
            raise
        if not await self.stored(str(digest)):
            await self._place(upload, chunks, str(digest))
        await self._link(repository, str(digest), upload.size, upload_id)
        await self.driver.delete(upload_prefix(upload_id))
        return upload.size

    async def _verify_upload(self, upload: Upload, chunks: list[Chunk] | None, digest: Digest) -> None:
        """Check the upload's bytes against `digest`: from the hash state its last chunk left, or, when
        there is none (another algorithm, or a chunk from a process that could not save it), by
        reading the bytes once more: the upload's one object where the driver appends, else `chunks`."""
        hasher = _resumed_hash(upload) if digest.algorithm == "sha256" else None
        if hasher is None:
            hasher = digest.hasher()
            parts = [(upload_data_key(upload.id), upload.size)] if chunks is None else [(c.key, c.size) for c in chunks]
            for key, size in parts:
                if size == 0:
                    continue
                try:
                    await _stream(self.driver.reader(key, 0, size), None, hasher)
                except NotFound:
                    raise BlobUploadInvalid(_DATA_GONE) from None
        self._verify(digest, hasher)

    async def _place(self, upload: Upload, chunks: list[Chunk] | None, digest: str) -> None:
        """Store the verified bytes of `upload` (its `chunks` where the driver does not append) as
        blob `digest`. Idempotent, so that a retry after a crash between placing and the index update
        finds the blob in place."""
        key = blob_key(digest)
        try:
            if upload.size == 0:
                await self.driver.put(key, b"")
            elif chunks is not None:
                if len(chunks) == 1:
                    await self.driver.move(chunks[0].key, key)
                else:
                    await self.driver.concat([c.key for c in chunks], key)
            else:
                async with self.driver.appender(upload_data_key(upload.id), create=False) as data:
                    if (await self.status(upload.repository, upload.id)).size != upload.size:
                        raise BlobUploadInvalid({"reason": "the upload grew while it was being finished"})
                    await data.seal(upload.size, key)
        except Busy:
            raise BlobUploadInvalid({"reason": "a chunk of this upload is still being written"}) from None
        except NotFound:
            try:
                placed = await self.driver.stat(key)
            except NotFound:
                raise BlobUploadInvalid(_DATA_GONE) from None
            if placed.size != upload.size:
                raise BlobUploadInvalid(_DATA_GONE) from None

    @staticmethod
    def _verify(digest: Digest, hasher) -> None:
        if hasher.hexdigest() != digest.encoded:
            raise DigestInvalid({"expected": str(digest), "computed": f"{digest.algorithm}:{hasher.hexdigest()}"})


async def _commit(writer: Writer) -> None:
    """Commit `writer`; a write the collector took for abandoned (it showed no progress for a whole
    grace period, see Driver.abandoned) is refused, and nothing of it is stored."""
    try:
        await writer.commit()
    except NotFound:
        raise BlobUploadInvalid(
            {"reason": "the upload stalled longer than the garbage collector's grace period and was discarded"}
        ) from None


def collecting(digest: str) -> Unavailable:
    """The error of a push that meets a blob the collector is deleting."""
    return Unavailable(
        {"digest": digest, "reason": "the garbage collector is deleting this blob; push it again shortly"},
        headers={"Retry-After": "5"},
    )


def location(repository: str, upload_id: str) -> str:
    """The URL path of an upload session."""
    return f"/v2/{repository}/blobs/uploads/{upload_id}"
