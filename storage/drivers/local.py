"""The local-disk driver: objects are files under a root directory, replaced atomically.

A new object is written to a temp file under `<root>/.tmp/`, fsync'ed, renamed into place and its
directory fsync'ed, so a crash at any point leaves either the old object or the new one, never a
partial one. File I/O runs in worker threads in 1 MiB pieces, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat
import time
import uuid
from collections.abc import AsyncIterator

from storage.drivers.base import Entry, NotFound

CHUNK = 1 << 20  # reads
WRITE_PIECE = 4 << 20  # writes go to disk in pieces this large, one in flight while the next fills
TMP_DIR = ".tmp"
STALE_TMP_S = 24 * 3600


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: str, dst: str, durable: bool = True) -> None:
    """Rename `tmp` onto `dst` (creating its directory) and, if `durable`, make the rename durable."""
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    os.replace(tmp, dst)
    if durable:
        _fsync_dir(parent)


class LocalWriter:
    """Writes in the background: while one piece goes to disk in a worker thread, the next one fills."""

    def __init__(self, path: str, tmp_path: str, file, durable: bool):
        self._path, self._tmp_path, self._file, self._durable = path, tmp_path, file, durable
        self._buffer = bytearray()
        self._size = 0
        self._pending: asyncio.Future[int] | None = None
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def _drain(self) -> None:
        """Wait for the piece being written, if any."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self._size += len(data)
        if len(self._buffer) >= WRITE_PIECE:
            buffer, self._buffer = self._buffer, bytearray()
            await self._drain()
            self._pending = asyncio.get_running_loop().run_in_executor(None, self._file.write, buffer)

    def _finish(self, buffer: bytearray) -> None:
        self._file.write(buffer)
        self._file.flush()
        if self._durable:
            os.fsync(self._file.fileno())
        self._file.close()
        _place(self._tmp_path, self._path, self._durable)

    async def commit(self) -> int:
        buffer, self._buffer = self._buffer, bytearray()
        try:
            await self._drain()
            await asyncio.to_thread(self._finish, buffer)
        except BaseException:
            await self.cancel()
            raise
        self._closed = True
        return self._size

    def _discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp_path)

    async def cancel(self) -> None:
        if not self._closed:
            self._closed = True
            self._buffer = bytearray()
            with contextlib.suppress(Exception):
                await self._drain()
            await asyncio.to_thread(self._discard)


class LocalDriver:
    """Files under `root`. Safe for several processes sharing one root."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._tmp = os.path.join(self.root, TMP_DIR)
        os.makedirs(self._tmp, exist_ok=True)
        self._purge_stale_tmp()

    def _purge_stale_tmp(self) -> None:
        cutoff = time.time() - STALE_TMP_S
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == TMP_DIR:
            raise ValueError(f"invalid storage key {key!r}")
        return os.path.join(self.root, *parts)

    async def stat(self, key: str) -> Entry:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(key)
        return Entry(key, st.st_size, st.st_mtime)

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            with open(self._path(key), "rb") as f:
                return f.read()

        try:
            return await asyncio.to_thread(read)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None

    async def put(self, key: str, data: bytes) -> None:
        writer = await self.writer(key)
        await writer.write(data)
        await writer.commit()

    async def reader(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            file = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None
        try:
            if offset:
                file.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                size = CHUNK if remaining is None else min(CHUNK, remaining)
                data = await asyncio.to_thread(file.read, size)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            file.close()

    async def writer(self, key: str, durable: bool = True) -> LocalWriter:
        path = self._path(key)
        tmp_path = os.path.join(self._tmp, uuid.uuid4().hex)
        file = await asyncio.to_thread(open, tmp_path, "xb")
        return LocalWriter(path, tmp_path, file, durable)

    async def move(self, src: str, dst: str) -> None:
        src_path, dst_path = self._path(src), self._path(dst)

        def sync_and_place() -> None:
            fd = os.open(src_path, os.O_RDONLY)  # the source may have been written without fsync
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _place(src_path, dst_path)

        try:
            await asyncio.to_thread(sync_and_place)
        except FileNotFoundError as e:
            if not os.path.exists(src_path):
                raise NotFound(src) from e
            raise

    async def concat(self, sources: list[str], dst: str) -> None:
        paths = [self._path(key) for key in sources]
        tmp_path = os.path.join(self._tmp, uuid.uuid4().hex)

        def join() -> None:
            try:
                with open(tmp_path, "xb") as out:
                    for path in paths:
                        with open(path, "rb") as part:
                            size = os.fstat(part.fileno()).st_size
                            copied = 0
                            while copied < size:  # in the kernel, where the filesystem allows
                                n = os.copy_file_range(part.fileno(), out.fileno(), size - copied)
                                if n == 0:
                                    break
                                copied += n
                    out.flush()
                    os.fsync(out.fileno())
                _place(tmp_path, self._path(dst))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_path)
                raise

        try:
            await asyncio.to_thread(join)
        except (FileNotFoundError, IsADirectoryError) as e:
            missing = [key for key, path in zip(sources, paths, strict=True) if not os.path.isfile(path)]
            if missing:
                raise NotFound(missing[0]) from e
            raise

    async def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            try:
                os.unlink(path)
            except IsADirectoryError:
                shutil.rmtree(path, ignore_errors=True)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise

        await asyncio.to_thread(remove)

    async def list(self, prefix: str) -> AsyncIterator[Entry]:
        def walk() -> list[Entry]:
            entries = []
            for directory, dirs, files in os.walk(self.root):
                if directory == self.root and TMP_DIR in dirs:
                    dirs.remove(TMP_DIR)
                rel = os.path.relpath(directory, self.root)
                base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                if not (base.startswith(prefix) or prefix.startswith(base)):
                    dirs.clear()
                    continue
                for name in files:
                    key = base + name
                    if key.startswith(prefix):
                        try:
                            st = os.stat(os.path.join(directory, name))
                        except FileNotFoundError:
                            continue
                        entries.append(Entry(key, st.st_size, st.st_mtime))
            entries.sort(key=lambda e: e.key)
            return entries

        for entry in await asyncio.to_thread(walk):
            yield entry

    async def url(self, key: str, expires_s: int) -> str | None:
        return None

    async def local_path(self, key: str) -> str | None:
        path = self._path(key)
        if not os.path.isfile(path):
            raise NotFound(key)
        return path
