"""Single-flight work across every process and replica: one holder of a named lease in the metadata
index does the work (fetches a manifest or a blob from an upstream) while the others wait for its
result to become visible; a holder that dies lets its lease expire, and a waiter takes over.

A blob fetch streams to the client that started it while its bytes are hashed and written to storage;
the blob becomes visible only once its digest matched. The last piece goes to that client only then,
so a client never receives a whole body with wrong bytes: on a mismatch, a short read or a broken
upstream its connection is aborted and nothing is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from registry.errors import BlobUnknown, DigestInvalid
from registry.layout import blob_key
from registry.names import Digest
from registry.proxy.upstream import BlobStream, UpstreamError, refusal
from storage.drivers import Driver, Writer
from storage.metadata import Leases, Metadata

log = logging.getLogger("registry.proxy")

T = TypeVar("T")

LEASE_TTL_S = 8.0  # a holder that stops renewing (killed) loses its lease after this
RENEW_EVERY_S = LEASE_TTL_S / 3
HASH_BATCH = 1 << 20  # bytes hashed at once in a worker thread
AHEAD_PIECES = 32  # pieces (of up to 256 KiB) a fetch reads ahead of its client
POLL_S = 0.05  # how often a waiter looks whether the holder's result is visible


class Leased:
    """Named single-flight work over the metadata's leases."""

    def __init__(self, leases: Leases):
        self.leases = leases
        self._background: set[asyncio.Task[None]] = set()

    async def once(self, name: str, ready: Callable[[], Awaitable[T | None]], work: Callable[[], Awaitable[T]]) -> T:
        """`ready()` when it gives a result; else `work()` if this takes lease `name`, else wait for
        `ready()` (or for the lease to be free, then try again). Work holds the lease, renewed, until it
        ends."""
        while True:
            found = await ready()
            if found is not None:
                return found
            lease = await self.take(name)
            if lease is not None:
                try:
                    found = await ready()  # the last holder may have finished just now
                    return found if found is not None else await work()
                finally:
                    await lease.release()
            await asyncio.sleep(POLL_S)

    async def take(self, name: str) -> Lease | None:
        """Take lease `name` for a holder of its own, renewed until released; None when it is taken."""
        holder = uuid.uuid4().hex
        if not await self.leases.take(name, holder, LEASE_TTL_S):
            return None
        return Lease(self, name, holder, asyncio.create_task(self._renew(name, holder)))

    async def _renew(self, name: str, holder: str) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            with contextlib.suppress(Exception):  # a missed renewal is tried again; expiry only lets a waiter in
                await self.leases.take(name, holder, LEASE_TTL_S)

    def finish_in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` in a task of its own, to its end whoever waits for it (a fetch whose client went
        away); the task is kept until it ends."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


@dataclass
class Lease:
    """A lease `Leased.take` took, renewed by `renewal` until `release()`."""

    leased: Leased
    name: str
    holder: str
    renewal: asyncio.Task[None]

    async def release(self) -> None:
        self.renewal.cancel()
        await self.leased.leases.release(self.name, self.holder)


class BlobFetch:
    """One blob being fetched from an upstream into storage and, as it arrives, to the client that
    asked first. Holds `lease` until it ends, whatever the client does."""

    def __init__(
        self,
        leased: Leased,
        metadata: Metadata,
        driver: Driver,
        upstream: BlobStream,
        repository: str,
        digest: Digest,
        lease: Lease,
    ):
        self.leased, self.metadata, self.driver = leased, metadata, driver
        self.upstream, self.repository, self.digest = upstream, repository, digest
        self.lease = lease
        self.size = upstream.size
        # The fetch runs in a task of its own, ahead of the client by up to AHEAD_PIECES pieces, so
        # that reading the upstream, storing and sending to the client overlap.
        self._pieces: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(AHEAD_PIECES)
        self._listening = True
        self._task: asyncio.Task[None] | None = None

    def _start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = self.leased.finish_in_background(self._run())
        return self._task

    async def _run(self) -> None:
        """The whole fetch; the client, while it listens, gets each piece, then None once the blob
        matched and was stored (or the exception that ended the fetch)."""
        end: BaseException | None = None
        try:
            async for piece in self._pump():
                if self._listening:
                    await self._pieces.put(piece)
        except Exception as e:
            end = e
        if self._listening:
            await self._pieces.put(end)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The blob's bytes for the client; each piece is sent once the next one arrived, and the last
        only once the whole blob matched its digest and was stored (raises otherwise). A client that
        goes away leaves the fetch running, for the next one."""
        self._start()
        try:
            held = None
            while (item := await self._pieces.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if held is not None:
                    yield held
                held = item
            if held is not None:
                yield held
        finally:
            self._listening = False
            while not self._pieces.empty():  # lets a fetch waiting to hand over a piece go on
                self._pieces.get_nowait()

    async def drain(self) -> None:
        """Wait until the fetch has stored the blob (or failed), sending it nowhere."""
        self._listening = False
        while not self._pieces.empty():
            self._pieces.get_nowait()
        await asyncio.shield(self._start())

    async def _upstream_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self.upstream.chunks():
                yield piece
        except UpstreamError as e:
            raise refusal(e, f"blob {self.digest}", BlobUnknown) from None

    async def _pump(self) -> AsyncIterator[bytes]:
        writer: Writer | None = None
        try:
            writer = await self.driver.writer(blob_key(str(self.digest)))
            hasher = self.digest.hasher()
            # The pieces are hashed a MiB at a time in a worker thread (hashlib lets go of the GIL) while
            # they are written and sent, and while the next ones arrive.
            loop = asyncio.get_running_loop()
            hashing: asyncio.Future[None] | None = None
            batch: list[bytes] = []
            batched = 0

            def hash_all(pieces: list[bytes]) -> None:
                for piece in pieces:
                    hasher.update(piece)

            async for piece in self._upstream_chunks():
                batch.append(piece)
                batched += len(piece)
                if batched >= HASH_BATCH:
                    if hashing is not None:
                        await hashing
                    hashing, batch, batched = loop.run_in_executor(None, hash_all, batch), [], 0
                await writer.write(piece)
                yield piece
            if hashing is not None:
                await hashing
            hash_all(batch)
            if hasher.hexdigest() != self.digest.encoded:
                raise DigestInvalid(
                    {"expected": str(self.digest), "computed": f"{self.digest.algorithm}:{hasher.hexdigest()}"},
                    message="the upstream sent bytes that do not match the digest; nothing was stored",
                )
            size = await writer.commit()
            await self.metadata.link_blob(self.repository, str(self.digest), size)
            log.info("cached blob %s of %s (%d bytes)", self.digest, self.repository, size)
        except BaseException as e:
            log.warning("fetch of blob %s for %s failed, nothing stored: %s", self.digest, self.repository, e)
            raise
        finally:
            self.upstream.close()
            if writer is not None:
                await writer.cancel()
            await self.lease.release()
