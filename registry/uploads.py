"""The rules of blob uploads: monolithic, streamed, chunked and resumable, and cross-repository mounts.

No upload state lives only in the process: the index holds each upload's size and chunk list, the
driver holds the chunks' bytes, so every request of one upload may land on a different replica. (A
process remembers the running hash of the chunks it received, so that the final PUT need not hash
them again; when another process took a chunk, the final PUT hashes the chunks once more.) A blob
is visible only after its digest matched, its bytes were committed and its index row was written.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from registry.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
    SizeInvalid,
    Unavailable,
)
from registry.layout import blob_key, chunk_key, upload_prefix
from registry.names import Digest
from storage.drivers import Driver, NotFound, Writer
from storage.index import BlobCollecting, Chunk, Index, Upload
from storage.index.index import DELETING

Body = AsyncIterator[bytes]
RUNNING_HASHES = 1024
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
    """Hash `body` (if `hasher`) and write it to `writer` (if any) as it arrives; returns its length."""
    size = 0
    async for data in body:
        if data:
            size += len(data)
            if hasher is not None:
                hasher.update(data)
            if writer is not None:
                await writer.write(data)
    return size


class Uploads:
    """Upload sessions over an index and a driver."""

    def __init__(self, index: Index, driver: Driver):
        self.index, self.driver = index, driver
        # upload id -> (bytes hashed, sha256 of them): chunks continue the hash their predecessor left.
        self._running: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    async def start(self, repository: str) -> str:
        """Open an upload session in `repository`; returns its id."""
        upload_id = str(uuid.uuid4())
        await self.index.create_upload(upload_id, repository)
        return upload_id

    async def status(self, repository: str, upload_id: str) -> Upload:
        """The upload's state; raises BlobUploadUnknown when it is not open in `repository`."""
        try:
            uuid.UUID(upload_id)
        except ValueError:
            raise BlobUploadUnknown({"upload": upload_id[:100]}) from None
        upload = await self.index.get_upload(upload_id)
        if upload is None or upload.repository != repository:
            raise BlobUploadUnknown({"upload": upload_id})
        return upload

    async def cancel(self, repository: str, upload_id: str) -> None:
        """Abandon an upload and delete its bytes."""
        await self.status(repository, upload_id)
        await self.index.delete_upload(upload_id)
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
            sources = [r for r in await self.index.repositories_with_blob(str(digest)) if may_pull(r)]
        for candidate in sources:
            size = await self.index.blob_size(candidate, str(digest))
            if size is not None:
                try:
                    await self.index.link_blob(repository, str(digest), size)
                except BlobCollecting:
                    return False
                return True
        return False

    async def stored(self, digest: str) -> bool:
        """Whether the bytes of `digest` are stored; if so they are now kept for a grace period at
        least. While the collector is deleting them this waits, so that new bytes are never written
        under a key that is being deleted."""
        deadline = time.monotonic() + COLLECTION_WAIT_S
        while (state := await self.index.reserve_blob(digest)) == DELETING:
            if time.monotonic() > deadline:
                raise collecting(digest)
            await asyncio.sleep(0.1)
        return state is not None

    async def _link(self, repository: str, digest: str, size: int, upload_id: str | None = None) -> None:
        try:
            if upload_id is None:
                await self.index.link_blob(repository, digest, size)
            else:
                await self.index.finish_upload(upload_id, repository, digest, size)
        except BlobCollecting:
            raise collecting(digest) from None

    async def monolithic(self, repository: str, digest: Digest, body: Body) -> None:
        """Store a whole blob sent in one request, verified while it streams in."""
        hasher = digest.hasher()
        if await self.stored(str(digest)):
            size = await _stream(body, None, hasher)  # stored once already: verify, keep nothing
            self._verify(digest, hasher)
        else:
            writer = await self.driver.writer(blob_key(str(digest)))
            try:
                size = await _stream(body, writer, hasher)
                self._verify(digest, hasher)
                await writer.commit()
            finally:
                await writer.cancel()
        await self._link(repository, str(digest), size)

    async def append(self, repository: str, upload_id: str, body: Body, content_range: ByteRange | None) -> int:
        """Append the request body to the upload as one chunk; returns the upload's new size.

        `content_range`, when given, must start where the upload ends (else RangeInvalid, 416) and
        match the body's length.
        """
        upload = await self.status(repository, upload_id)
        if content_range is not None and content_range.start != upload.size:
            raise RangeInvalid(
                {"expected_start": upload.size, "got": content_range.start},
                headers={"Range": range_header(upload.size), "Location": location(repository, upload_id)},
            )
        key = chunk_key(upload_id, upload.size, uuid.uuid4().hex[:8])
        writer = await self.driver.writer(key, durable=False)  # durable once it becomes the blob
        hasher = self._prefix_hasher(upload_id, upload.size)
        try:
            size = await _stream(body, writer, hasher)
            if content_range is not None and size != content_range.length:
                raise SizeInvalid({"content_range": content_range.length, "received": size})
            if size == 0:
                return upload.size
            await writer.commit()
        finally:
            await writer.cancel()
        prefix_digest = "" if hasher is None else f"sha256:{hasher.hexdigest()}"
        if not await self.index.add_chunk(upload_id, Chunk(upload.size, size, key, prefix_digest)):
            await self.driver.delete(key)
            current = await self.status(repository, upload_id)
            raise RangeInvalid(
                {"reason": "the upload moved on concurrently"},
                headers={"Range": range_header(current.size), "Location": location(repository, upload_id)},
            )
        if hasher is not None:
            self._running[upload_id] = (upload.size + size, hasher)
            while len(self._running) > RUNNING_HASHES:
                self._running.popitem(last=False)
        return upload.size + size

    def _prefix_hasher(self, upload_id: str, start: int):
        """The sha256 of the upload's bytes before `start`, ready to continue, when this process
        hashed them (None when another process took the previous chunk)."""
        running = self._running.pop(upload_id, None)
        if start == 0:
            return hashlib.sha256()
        if running is not None and running[0] == start:
            return running[1]
        return None

    async def finish(self, repository: str, upload_id: str, digest: Digest) -> int:
        """Close the upload as blob `digest` once its bytes match; returns the blob's size.

        On a mismatch the upload is cancelled and DigestInvalid raised; nothing becomes visible.
        """
        upload = await self.status(repository, upload_id)
        self._running.pop(upload_id, None)
        try:
            await self._assemble(upload, digest)
        except DigestInvalid:
            await self.cancel(repository, upload_id)
            raise
        await self._link(repository, str(digest), upload.size, upload_id)
        await self.driver.delete(upload_prefix(upload_id))
        return upload.size

    async def _assemble(self, upload: Upload, digest: Digest) -> None:
        """Verify the upload's bytes against `digest` and make sure the blob is stored."""
        chunks = upload.chunks
        offset = 0
        for chunk in chunks:
            if chunk.start != offset:
                raise BlobUploadInvalid({"reason": "the upload's chunks are not contiguous"})
            offset += chunk.size
        if offset != upload.size:
            raise BlobUploadInvalid({"reason": "the upload's chunks are not contiguous"})
        hashed = bool(chunks) and chunks[-1].digest == str(digest)  # this process hashed them all
        if hashed and len(chunks) == 1:
            # The usual docker push: one chunk, already hashed while it streamed in.
            if not await self.stored(str(digest)):
                await self._place_chunk(chunks[0], str(digest))
            return
        if not hashed:
            # Chunks hashed by other processes (or another algorithm): hash them once more, here.
            hasher = digest.hasher()
            for chunk in chunks:
                try:
                    await _stream(self.driver.reader(chunk.key), None, hasher)
                except NotFound:
                    raise BlobUploadInvalid(_DATA_GONE) from None
            self._verify(digest, hasher)
        if not await self.stored(str(digest)):
            try:
                await self.driver.concat([c.key for c in chunks], blob_key(str(digest)))
            except NotFound:
                raise BlobUploadInvalid(_DATA_GONE) from None

    async def _place_chunk(self, chunk: Chunk, digest: str) -> None:
        """Move a verified chunk to its blob key; idempotent, so a retry after a crash between the
        move and the index update finds the blob already in place."""
        try:
            await self.driver.move(chunk.key, blob_key(digest))
        except NotFound:
            try:
                placed = await self.driver.stat(blob_key(digest))
            except NotFound:
                raise BlobUploadInvalid(_DATA_GONE) from None
            if placed.size != chunk.size:
                raise BlobUploadInvalid(_DATA_GONE) from None

    @staticmethod
    def _verify(digest: Digest, hasher) -> None:
        if hasher.hexdigest() != digest.encoded:
            raise DigestInvalid({"expected": str(digest), "computed": f"{digest.algorithm}:{hasher.hexdigest()}"})


def collecting(digest: str) -> Unavailable:
    """The error of a push that meets a blob the collector is deleting."""
    return Unavailable(
        {"digest": digest, "reason": "the garbage collector is deleting this blob; push it again shortly"},
        headers={"Retry-After": "5"},
    )


def location(repository: str, upload_id: str) -> str:
    """The URL path of an upload session."""
    return f"/v2/{repository}/blobs/uploads/{upload_id}"
