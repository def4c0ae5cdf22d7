"""The S3 driver: objects in a bucket under a key prefix, through boto3.

boto3 blocks, so every call runs in the driver's own thread pool (as large as its connection pool),
never on the event loop. Large objects are written as multipart uploads (aborted on cancel, so no
parts are left behind). S3 cannot append: each append to an upload's data is an object of its own,
and the seal joins them on the server side (`UploadPartCopy`) where their sizes allow it.
Credentials come from the usual AWS chain: environment, profile, instance role.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from storage.drivers.base import Entry, NotFound, Piece
from storage.drivers.pieces import WriterPiece, check_pieces, piece_key
from storage.errors import BackendUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

T = TypeVar("T")
READ_CHUNK = 1 << 20
PART_SIZE = 16 << 20  # multipart part size when writing
PARTS_IN_FLIGHT = 2  # parts of one object uploading at once while the next arrives
MIN_PART = 5 << 20  # S3's smallest part but the last
MAX_COPY_PART = 1 << 30  # server-side copies go in pieces of at most this
DELETE_BATCH = 1000
_MISSING = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_TRANSIENT = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed"}


class _Location(TypedDict):
    """The Bucket and Key arguments of a boto3 call naming one object."""

    Bucket: str
    Key: str


def _translate(error: Exception, key: str) -> Exception:
    """The driver's exception for a boto3 one: NotFound, BackendUnavailable, or the error itself."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING or status == 404:
            return NotFound(key)
        if code in _TRANSIENT or status >= 500:
            return BackendUnavailable(f"object store error {code or status} on {key}")
        return error
    if isinstance(error, BotoConnectionError | HTTPClientError | ReadTimeoutError):
        return BackendUnavailable(f"object store unreachable: {error}")
    return error


class S3Writer:
    """Buffers PART_SIZE bytes a part and uploads parts in the background (at most PARTS_IN_FLIGHT at
    once) while the next ones arrive; small objects go up in one PUT at commit."""

    def __init__(self, driver: S3Driver, key: str):
        self._driver, self._key = driver, key
        self._pieces: list[bytes] = []  # what arrived since the last part, joined (one copy) into the next
        self._buffered = 0
        self._size = 0
        self._upload_id: str | None = None
        self._parts: dict[int, str] = {}  # part number -> ETag
        self._in_flight: set[asyncio.Task[None]] = set()
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    async def _upload_part(self, number: int, data: bytes) -> None:
        driver = self._driver
        part = await driver._call(
            self._key,
            driver.client.upload_part,
            **driver._at(self._key),
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts[number] = part["ETag"]

    async def _start_part(self, data: bytes) -> None:
        driver = self._driver
        if self._upload_id is None:
            created = await driver._call(self._key, driver.client.create_multipart_upload, **driver._at(self._key))
            self._upload_id = created["UploadId"]
        while len(self._in_flight) >= PARTS_IN_FLIGHT:
            await self._wait(asyncio.FIRST_COMPLETED)
        number = len(self._parts) + len(self._in_flight) + 1
        task = asyncio.create_task(self._upload_part(number, data))
        self._in_flight.add(task)

    async def _wait(self, when: str = asyncio.ALL_COMPLETED) -> None:
        """Wait for part uploads to finish (the first, or all); re-raises the first failure."""
        if not self._in_flight:
            return
        done, self._in_flight = await asyncio.wait(self._in_flight, return_when=when)
        for task in done:
            task.result()

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        while self._buffered + len(data) >= PART_SIZE:
            cut = PART_SIZE - self._buffered
            part = b"".join([*self._pieces, data[:cut]])
            self._pieces, self._buffered, data = [], 0, data[cut:]
            await self._start_part(part)
        if data:
            self._pieces.append(bytes(data))
            self._buffered += len(data)

    def _take_rest(self) -> bytes:
        rest = b"".join(self._pieces)
        self._pieces, self._buffered = [], 0
        return rest

    async def commit(self) -> int:
        driver = self._driver
        try:
            rest = self._take_rest()
            if self._upload_id is None:
                await driver.put(self._key, rest)
            else:
                if rest:
                    await self._start_part(rest)
                await self._wait()
                parts = [{"ETag": self._parts[n], "PartNumber": n} for n in sorted(self._parts)]
                await driver._call(
                    self._key,
                    driver.client.complete_multipart_upload,
                    **driver._at(self._key),
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            await self.cancel()
            raise
        self._done = True
        return self._size

    async def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        self._take_rest()
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._in_flight = set()
        if self._upload_id is not None:
            driver = self._driver
            await driver._call(
                self._key, driver.client.abort_multipart_upload, **driver._at(self._key), UploadId=self._upload_id
            )


class S3Driver:
    """Objects under `prefix` in `bucket` of the S3 service at `endpoint` (AWS when None)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        max_connections: int = 64,
    ):
        self.bucket, self.prefix = bucket, prefix
        config = Config(
            max_pool_connections=max_connections,
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path"},
            signature_version="s3v4",
        )
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)
        self._threads = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="s3")

    def _full(self, key: str) -> str:
        return self.prefix + key

    def _at(self, key: str) -> _Location:
        """The Bucket and Key arguments naming `key`."""
        return {"Bucket": self.bucket, "Key": self.prefix + key}

    async def _call(self, key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking boto3 call in the driver's threads, translating its errors."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._threads, lambda: fn(*args, **kwargs))
        except Exception as e:
            translated = _translate(e, key)
            if translated is e:
                raise
            raise translated from e

    async def stat(self, key: str) -> Entry:
        head = await self._call(key, self.client.head_object, **self._at(key))
        return Entry(key, head["ContentLength"], head["LastModified"].timestamp())

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            body = self.client.get_object(**self._at(key))["Body"]
            with body:
                return body.read()

        return await self._call(key, read)

    async def put(self, key: str, data: bytes) -> None:
        await self._call(key, self.client.put_object, **self._at(key), Body=data)

    async def reader(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            await self.stat(key)
            return
        ranged = {}
        if offset or length is not None:
            end = "" if length is None else offset + length - 1
            ranged["Range"] = f"bytes={offset}-{end}"
        try:
            response = await self._call(key, self.client.get_object, **self._at(key), **ranged)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "InvalidRange":
                return  # from the end of the object on: nothing to read
            raise
        body = response["Body"]
        try:
            while True:
                data = await self._call(key, body.read, READ_CHUNK)
                if not data:
                    break
                yield data
        finally:
            body.close()

    async def writer(self, key: str, durable: bool = True) -> S3Writer:
        return S3Writer(self, key)

    async def append(self, key: str, start: int) -> WriterPiece:
        """Each append is an object of its own (S3 cannot append), joined on the server by `seal`."""
        at = piece_key(key, start)
        return WriterPiece(S3Writer(self, at), at, start, functools.partial(self.delete, at))

    async def seal(self, key: str, pieces: list[Piece], dst: str) -> None:
        """Joins the pieces on the server (UploadPartCopy) when every one but the last has MIN_PART
        bytes or more, else through the registry, once."""
        check_pieces(pieces)
        await self._join([(piece.key, piece.size) for piece in pieces], dst)

    async def move(self, src: str, dst: str) -> None:
        await self._join([(src, (await self.stat(src)).size)], dst)
        await self.delete(src)

    async def _join(self, sources: list[tuple[str, int]], dst: str) -> None:
        """Store the bytes of `sources` (key, size), in order, as `dst`."""
        parts = [(key, size) for key, size in sources if size]
        if not parts:
            await self.put(dst, b"")
        elif all(size >= MIN_PART for _, size in parts[:-1]):
            await self._copy_parts(parts, dst)
        else:  # parts too small to join on the server: through the registry, once
            writer = await self.writer(dst)
            try:
                for key, size in parts:
                    async for data in self.reader(key, 0, size):
                        await writer.write(data)
                await writer.commit()
            finally:
                await writer.cancel()

    async def _copy_parts(self, parts: list[tuple[str, int]], dst: str) -> None:
        """Join objects on the server side with UploadPartCopy (pieces of MAX_COPY_PART at most)."""
        if len(parts) == 1 and parts[0][1] <= MAX_COPY_PART:
            source = self._at(parts[0][0])
            await self._call(parts[0][0], self.client.copy_object, **self._at(dst), CopySource=source)
            return
        created = await self._call(dst, self.client.create_multipart_upload, **self._at(dst))
        upload_id = created["UploadId"]
        done: list[CompletedPartTypeDef] = []
        try:
            for key, size in parts:
                for start in range(0, size, MAX_COPY_PART):
                    end = min(size, start + MAX_COPY_PART) - 1
                    copied = await self._call(
                        key,
                        self.client.upload_part_copy,
                        **self._at(dst),
                        UploadId=upload_id,
                        PartNumber=len(done) + 1,
                        CopySource=self._at(key),
                        CopySourceRange=f"bytes={start}-{end}",
                    )
                    done.append({"ETag": copied["CopyPartResult"]["ETag"], "PartNumber": len(done) + 1})
            await self._call(
                dst,
                self.client.complete_multipart_upload,
                **self._at(dst),
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            await self._call(dst, self.client.abort_multipart_upload, **self._at(dst), UploadId=upload_id)
            raise

    async def delete(self, key: str) -> None:
        await self._call(key, self.client.delete_object, **self._at(key))
        batch: list[str] = []
        async for entry in self.list(key.rstrip("/") + "/"):
            batch.append(self._full(entry.key))
            if len(batch) == DELETE_BATCH:
                await self._delete_batch(batch)
                batch = []
        if batch:
            await self._delete_batch(batch)

    async def _delete_batch(self, keys: list[str]) -> None:
        objects = {"Objects": [{"Key": k} for k in keys], "Quiet": True}
        await self._call(keys[0], self.client.delete_objects, Bucket=self.bucket, Delete=objects)

    async def list(self, prefix: str) -> AsyncIterator[Entry]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call(prefix, self.client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                yield Entry(key, item["Size"], item["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    async def url(self, key: str, expires_s: int) -> str | None:
        return self.client.generate_presigned_url("get_object", Params=self._at(key), ExpiresIn=expires_s)

    async def abandoned(self, before: float, remove: bool = False) -> AsyncIterator[Entry]:
        """Multipart uploads under the prefix neither started nor given a part since `before`; with
        `remove`, aborted. A write in progress uploads a part for every PART_SIZE bytes it receives,
        so it is taken only if it received less than that since `before`; its commit then fails and
        nothing is stored."""
        listing: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page = await self._call(self.prefix, self.client.list_multipart_uploads, **listing)
            for upload in page.get("Uploads", []):
                key, upload_id = upload["Key"][len(self.prefix) :], upload["UploadId"]
                if upload["Initiated"].timestamp() >= before:
                    continue
                try:
                    size, last = await self._parts(key, upload_id)
                    last = max(last, upload["Initiated"].timestamp())
                    if last >= before:
                        continue
                    if remove:
                        await self._call(key, self.client.abort_multipart_upload, **self._at(key), UploadId=upload_id)
                except NotFound:
                    continue  # finished or aborted meanwhile
                yield Entry(f"{key} (unfinished multipart upload {upload_id})", size, last)
            if not page.get("IsTruncated"):
                return
            listing["KeyMarker"], listing["UploadIdMarker"] = page["NextKeyMarker"], page["NextUploadIdMarker"]

    async def _parts(self, key: str, upload_id: str) -> tuple[int, float]:
        """(bytes, time of the newest part) of a multipart upload's parts; 0.0 when it has none."""
        size, newest = 0, 0.0
        listing: dict[str, Any] = {**self._at(key), "UploadId": upload_id}
        while True:
            page = await self._call(key, self.client.list_parts, **listing)
            for part in page.get("Parts", []):
                size += part["Size"]
                newest = max(newest, part["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return size, newest
            listing["PartNumberMarker"] = page["NextPartNumberMarker"]
