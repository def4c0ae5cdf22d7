"""The local-disk driver: objects are files under a root directory, replaced atomically.

A new object is written to a temp file under `<root>/.tmp/`, fsync'ed, renamed into place and its
directory fsync'ed, so a crash at any point leaves either the old object or the new one, never a
partial one. A temp file is locked (flock) while it is written, so a crashed writer's leftover (the
kernel drops the lock with the process) is told from a write in progress, however slow.

File I/O runs in worker threads, never on the event loop: writes in 4 MiB pieces, whole
blocks with O_DIRECT where the filesystem allows (large blobs then skip the page cache and the fsync
has little left to do), reads in 1 MiB pieces. An upload's data is one file that grows chunk by
chunk, each append holding it locked (flock) while it writes at its end, and becomes the blob by a
rename; an append that finds it held (a racing chunk) writes a piece file of its own, which the seal
then copies in. Layers may be private:
every file is created 0600 and every directory 0700, whatever the umask, and the root is made 0700
when it already exists (older versions left files readable to every local user).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import mmap
import os
import shutil
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from storage.drivers.base import Entry, NotFound, Piece
from storage.drivers.pieces import WriterPiece, check_pieces, piece_key

CHUNK = 1 << 20  # reads
PIECE = 4 << 20  # writes go to disk in pieces this large, one in flight while the next fills
ALIGN = 4096  # direct I/O needs offsets, lengths and memory aligned to the device's blocks
POOLED_BUFFERS = 4
TMP_DIR = ".tmp"
STALE_TMP_S = 24 * 3600
FILE_MODE = 0o600
DIR_MODE = 0o700
T = TypeVar("T")


def _makedirs(path: str) -> None:
    """Create `path` and any missing parent, each DIR_MODE (os.makedirs gives parents the umask's)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        _makedirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):  # a file in the way, as os.makedirs reports it
            raise


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: str, dst: str, durable: bool = True) -> None:
    """Rename `tmp` onto `dst` (creating its directory) and, if `durable`, make the rename durable."""
    parent = os.path.dirname(dst)
    _makedirs(parent)
    os.replace(tmp, dst)
    if durable:
        _fsync_dir(parent)


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _direct_io_works(directory: str) -> bool:
    """Whether files in `directory` can be written with O_DIRECT (tmpfs and some others refuse it)."""
    path = os.path.join(directory, f"direct-{uuid.uuid4().hex}")
    buffer = mmap.mmap(-1, ALIGN)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, FILE_MODE)
        try:
            os.pwrite(fd, buffer, 0)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False
    finally:
        buffer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _to_the_end(job: asyncio.Future[T]) -> T:
    """Await a worker-thread job; when cancelled meanwhile, wait for the thread all the same before
    raising, so that nothing of ours touches the file or its descriptor after this returns."""
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await job
        raise


class _Buffers:
    """Page-aligned buffers of PIECE bytes, a few kept for reuse (fresh memory costs page faults)."""

    def __init__(self) -> None:
        self._free: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        return self._free.pop() if self._free else mmap.mmap(-1, PIECE)

    def give(self, buffer: mmap.mmap) -> None:
        if len(self._free) < POOLED_BUFFERS:
            self._free.append(buffer)
        else:
            buffer.close()


class _File:
    """An open file written at offsets from worker threads: whole aligned blocks with O_DIRECT (when
    `direct`), which skips copying them into the page cache, and the unaligned edges buffered."""

    def __init__(self, path: str, fd: int, direct: bool):
        self.path, self.fd, self._direct = path, fd, direct
        self._direct_fd: int | None = None

    def pwrite(self, buffer: mmap.mmap, lo: int, hi: int, base: int) -> None:
        """Write `buffer[lo:hi]` at file offset `base + lo`; `base` is aligned."""
        view = memoryview(buffer)
        first, last = -(-lo // ALIGN) * ALIGN, hi // ALIGN * ALIGN
        if not self._direct or first >= last:
            _write_all(self.fd, view[lo:hi], base + lo)
            return
        if self._direct_fd is None:  # the same file, even if renamed or deleted meanwhile
            self._direct_fd = os.open(f"/proc/self/fd/{self.fd}", os.O_WRONLY | os.O_DIRECT)
        _write_all(self.fd, view[lo:first], base + lo)
        _write_all(self._direct_fd, view[first:last], base + first)
        _write_all(self.fd, view[last:hi], base + last)

    def close(self) -> None:
        """Close the file; idempotent."""
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LocalWriter:
    """Writes from `offset` on in the background: while one piece goes to disk in a worker thread, the
    next one fills. `finish(end)` runs in a thread at commit, `discard()` at cancel."""

    def __init__(
        self,
        file: _File,
        offset: int,
        buffers: _Buffers,
        finish: Callable[[int], None],
        discard: Callable[[], None],
    ):
        self._file, self._buffers, self._finish, self._discard = file, buffers, finish, discard
        self._end = offset
        self._base = offset // ALIGN * ALIGN  # file offset of the current buffer's first byte
        self._lo = self._fill = offset - self._base  # the buffer's bytes to write: [lo, fill)
        self._buffer: mmap.mmap | None = None
        self._size = 0
        self._pending: tuple[mmap.mmap, asyncio.Future[None]] | None = None
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def _drain(self) -> None:
        """Wait for the piece being written, if any."""
        if self._pending is not None:
            (buffer, pending), self._pending = self._pending, None
            try:
                await _to_the_end(pending)
            finally:
                self._buffers.give(buffer)

    def _take_piece(self) -> tuple[mmap.mmap | None, int, int, int]:
        piece = self._buffer, self._lo, self._fill, self._base
        self._buffer, self._base, self._lo, self._fill = None, self._base + self._fill, 0, 0
        return piece

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._size += len(view)
        self._end += len(view)
        while view:
            if self._buffer is None:
                self._buffer = self._buffers.take()
            taken = min(PIECE - self._fill, len(view))
            self._buffer[self._fill : self._fill + taken] = view[:taken]
            self._fill += taken
            view = view[taken:]
            if self._fill == PIECE:
                full, lo, hi, base = self._take_piece()
                assert full is not None  # it has just been filled
                await self._drain()
                job = asyncio.get_running_loop().run_in_executor(None, self._file.pwrite, full, lo, hi, base)
                self._pending = (full, job)

    def _write_last(self, buffer: mmap.mmap | None, lo: int, hi: int, base: int) -> None:
        if buffer is not None:
            self._file.pwrite(buffer, lo, hi, base)
        self._finish(self._end)

    async def commit(self) -> int:
        buffer, lo, hi, base = self._take_piece()
        try:
            await self._drain()
            loop = asyncio.get_running_loop()
            await _to_the_end(loop.run_in_executor(None, self._write_last, buffer, lo, hi, base))
        except BaseException:
            await self.cancel()
            raise
        finally:
            if buffer is not None:
                self._buffers.give(buffer)
        self._closed = True
        return self._size

    async def cancel(self) -> None:
        if not self._closed:
            self._closed = True
            if self._buffer is not None:
                self._buffers.give(self._buffer)
                self._buffer = None
            with contextlib.suppress(Exception):
                await self._drain()  # no write of ours may land after cancel returns
            await asyncio.to_thread(self._discard)


def _lock_if_current(fd: int, path: str) -> os.stat_result | None:
    """Lock `fd` unless another holds it (not waiting); its stat when it is still the file at `path`
    (a seal may have moved that, a delete removed it), else None. The lock lasts until `fd` closes."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    try:
        current = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    opened = os.fstat(fd)
    return opened if (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino) else None


def _open_data(path: str, start: int) -> int | None:
    """The data file at `path` open for writing and locked, when no one else holds it and it is
    exactly `start` bytes long (created empty when `start` is 0); else None."""
    if start == 0:
        _makedirs(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_WRONLY | (os.O_CREAT if start == 0 else 0), FILE_MODE)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    st = _lock_if_current(fd, path)
    if st is not None and st.st_size == start:
        return fd
    os.close(fd)
    return None


def _forget(fd: int, path: str, start: int) -> None:
    """Cut the data file `fd` (locked, still at `path`) back to `start`, removing it when that leaves
    it empty: what followed `start` was only the caller's."""
    os.ftruncate(fd, start)
    if start == 0:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _forget_if_last(path: str, start: int, end: int) -> None:
    """Cut the data file at `path` back to `start` if it ends at `end` and no append holds it: the
    bytes from `start` were the last written (else they stay, unused, and later appends write pieces
    of their own)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        st = _lock_if_current(fd, path)
        if st is not None and st.st_size == end:
            _forget(fd, path, start)
    finally:
        os.close(fd)


def _seal_in_place(path: str, size: int, dst: str) -> bool:
    """Cut the file at `path` to `size` bytes, make it durable and move it to `dst`, when no append
    holds it and it has `size` bytes at least; False (nothing done) otherwise."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    try:
        st = _lock_if_current(fd, path)
        if st is None or st.st_size < size:
            return False
        os.ftruncate(fd, size)
        os.fsync(fd)
        _place(path, dst)  # still locked: no append starts in it meanwhile
        return True
    finally:
        os.close(fd)


def _copy_range(src: str, offset: int, size: int, out: int, name: str) -> None:
    """Copy `size` bytes of the file `src` from `offset` to the end of `out` (in the kernel, where the
    filesystem allows); NotFound(`name`) when the file is missing or shorter."""
    try:
        fd = os.open(src, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotFound(name) from None
    try:
        copied = 0
        while copied < size:
            n = os.copy_file_range(fd, out, size - copied, offset + copied)
            if n == 0:
                raise NotFound(name)
            copied += n
    finally:
        os.close(fd)


def _create_locked(directory: str) -> tuple[str, int]:
    """A new temp file in `directory`, open for writing and locked for as long as it stays open."""
    while True:
        path = os.path.join(directory, uuid.uuid4().hex)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)  # `_abandoned_in` holds it an instant at most
        if os.fstat(fd).st_nlink:
            return path, fd
        os.close(fd)  # taken for a leftover between its creation and the lock: start over


def _abandoned_in(directory: str, before: float, remove: bool) -> list[Entry]:
    """The temp files in `directory` no process holds (see `_create_locked`) and last written
    before `before`; with `remove`, deleted."""
    found = []
    for item in os.scandir(directory):
        try:
            fd = os.open(item.path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a write in progress
            st = os.fstat(fd)
            if st.st_nlink == 0 or st.st_mtime >= before or not stat.S_ISREG(st.st_mode):
                continue
            if remove:
                os.unlink(item.path)
            found.append(Entry(f"{TMP_DIR}/{item.name}", st.st_size, st.st_mtime))
        finally:
            os.close(fd)
    found.sort(key=lambda e: e.key)
    return found


class LocalDriver:
    """Files under `root`. Safe for several processes sharing one root."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._tmp = os.path.join(self.root, TMP_DIR)
        _makedirs(self._tmp)
        with contextlib.suppress(PermissionError):  # not ours: left as it is
            os.chmod(self.root, DIR_MODE)
        self._purge_stale_tmp()
        self._direct = _direct_io_works(self._tmp)
        self._buffers = _Buffers()

    def _purge_stale_tmp(self) -> None:
        _abandoned_in(self._tmp, time.time() - STALE_TMP_S, remove=True)

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == TMP_DIR:
            raise ValueError(f"invalid storage key {key!r}")
        return os.path.join(self.root, *parts)

    async def stat(self, key: str) -> Entry:
        try:
            st = await asyncio.to_thread(os.stat, self._path(key))
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
        """Reads ahead: the next piece is read in a worker thread while the caller sends this one."""
        path = self._path(key)

        def open_sequential() -> int:
            fd = os.open(path, os.O_RDONLY)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise IsADirectoryError(path)
            with contextlib.suppress(OSError):  # a larger kernel read-ahead
                os.posix_fadvise(fd, offset, length or 0, os.POSIX_FADV_SEQUENTIAL)
            return fd

        try:
            fd = await asyncio.to_thread(open_sequential)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None
        loop = asyncio.get_running_loop()
        end = None if length is None else offset + length

        def read_at(position: int) -> asyncio.Future[bytes] | None:
            size = CHUNK if end is None else min(CHUNK, end - position)
            return loop.run_in_executor(None, os.pread, fd, size, position) if size > 0 else None

        ahead = read_at(offset)
        try:
            while ahead is not None:
                data = await ahead
                ahead = None
                if not data:
                    break
                offset += len(data)
                ahead = read_at(offset)
                yield data
        finally:
            try:
                if ahead is not None:  # no read of ours may be running when the descriptor closes
                    with contextlib.suppress(Exception):
                        await _to_the_end(ahead)
            finally:
                os.close(fd)

    async def writer(self, key: str, durable: bool = True) -> LocalWriter:
        path = self._path(key)
        tmp_path, fd = await asyncio.to_thread(_create_locked, self._tmp)
        file = _File(tmp_path, fd, self._direct)

        def finish(end: int) -> None:
            if durable:
                os.fsync(file.fd)
            _place(tmp_path, path, durable)  # still locked: never taken for a leftover
            file.close()

        def discard() -> None:
            file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

        return LocalWriter(file, 0, self._buffers, finish, discard)

    async def append(self, key: str, start: int) -> WriterPiece:
        """Into the data file `key` itself when no other append holds it and it ends at `start` (the
        normal case: one chunk after another); else (a racing append, or bytes a lost race left) as a
        piece file of its own, written like `writer(durable=False)`.

        An append into the data file holds it locked from its start (the file's end) until commit or
        cancel: the bytes of every recorded piece lie before its start, so it can overwrite none, and
        a normal chunked upload becomes its blob by a rename. Cancelled, it cuts the file back."""
        path = self._path(key)
        fd = await asyncio.to_thread(_open_data, path, start)
        if fd is None:
            at = piece_key(key, start)
            return WriterPiece(await self.writer(at, durable=False), at, start, functools.partial(self.delete, at))
        file = _File(path, fd, self._direct)

        def finish(end: int) -> None:
            os.ftruncate(file.fd, end)
            file.close()

        def undo() -> None:
            try:
                if file.fd >= 0 and _lock_if_current(file.fd, path) is not None:
                    _forget(file.fd, path, start)
            finally:
                file.close()

        writer = LocalWriter(file, start, self._buffers, finish, undo)

        async def discard() -> None:
            await asyncio.to_thread(_forget_if_last, path, start, start + writer.size)

        return WriterPiece(writer, key, start, discard)

    async def seal(self, key: str, pieces: list[Piece], dst: str) -> None:
        """By a rename where the pieces are all of one file and no append holds it (a chunked upload
        with no race: no byte is copied), else by joining their bytes into a new file."""
        size = check_pieces(pieces)
        dst_path = self._path(dst)
        whole = {piece.key for piece in pieces}
        in_place = self._path(whole.pop()) if len(whole) == 1 and (len(pieces) == 1 or key in whole) else None

        def seal() -> None:
            if in_place is not None and _seal_in_place(in_place, size, dst_path):
                return
            tmp_path, fd = _create_locked(self._tmp)
            try:
                for piece in pieces:
                    offset = piece.start if piece.key == key else 0  # a piece file holds only its bytes
                    _copy_range(self._path(piece.key), offset, piece.size, fd, piece.key)
                os.fsync(fd)
                _place(tmp_path, dst_path)  # still locked: never taken for a leftover
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_path)
                raise
            finally:
                os.close(fd)

        await _to_the_end(asyncio.get_running_loop().run_in_executor(None, seal))

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

    async def abandoned(self, before: float, remove: bool = False) -> AsyncIterator[Entry]:
        """Temp files under `.tmp/` last written before `before` whose writer is gone: a writer
        holds a lock on its temp file until it commits or cancels, and the kernel drops the lock of
        a dead process, so a write in progress is never taken, however long it pauses."""
        for entry in await asyncio.to_thread(_abandoned_in, self._tmp, before, remove):
            yield entry
