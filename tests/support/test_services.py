"""Smoke tests of the real services of tests/support/services.py, through the session's `seaweed` and
`postgres` fixtures: the S3 features the storage driver relies on, as SeaweedFS implements them, and the
PostgreSQL behaviour the metadata store relies on. Only the test that kills SeaweedFS starts one of its own."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from psycopg import IsolationLevel
from psycopg_pool import ConnectionPool

from tests.support.services import Postgres, SeaweedS3, start_service

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum size of every part but the last


@pytest.fixture
def s3(seaweed: SeaweedS3) -> Any:
    return seaweed.client()


@pytest.fixture
def bucket(seaweed: SeaweedS3) -> str:
    """A fresh bucket for one test."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    seaweed.create_bucket(name)
    return name


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = excinfo.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


# ---------------------------------------------------------------------------------------------------- S3


def test_put_get_head(s3: Any, bucket: str) -> None:
    data = os.urandom(100_000)
    put = s3.put_object(Bucket=bucket, Key="a/blob", Body=data, ContentType="application/octet-stream")
    assert put["ETag"] == md5_etag(data)

    got = s3.get_object(Bucket=bucket, Key="a/blob")
    assert got["Body"].read() == data
    assert got["ETag"] == md5_etag(data)

    head = s3.head_object(Bucket=bucket, Key="a/blob")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == md5_etag(data)
    assert head["ContentType"] == "application/octet-stream"


def test_missing_key_and_bucket_errors(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="missing")
    assert error_code(excinfo) == (404, "404")  # HEAD has no body, so no "NoSuchKey" (as on AWS)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="missing")
    assert error_code(excinfo) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=f"{bucket}-none", Key="missing")
    assert error_code(excinfo) == (404, "NoSuchBucket")


def test_ranged_get(s3: Any, bucket: str) -> None:
    data = os.urandom(10_000)
    s3.put_object(Bucket=bucket, Key="r", Body=data)

    part = s3.get_object(Bucket=bucket, Key="r", Range="bytes=100-199")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == "bytes 100-199/10000"
    assert part["ContentLength"] == 100
    assert part["Body"].read() == data[100:200]

    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=9990-")["Body"].read() == data[9990:]
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-10")["Body"].read() == data[-10:]
    # An end past the object is cut to its end, as the HTTP spec says.
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=9000-20000")["Body"].read() == data[9000:]

    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="r", Range="bytes=20000-20001")
    assert error_code(excinfo) == (416, "InvalidRange")


def test_list_objects_v2_pagination_and_prefix(s3: Any, bucket: str) -> None:
    keys = [f"repos/r{i:02d}/link" for i in range(7)] + ["uploads/u1", "uploads/u2", "zzz"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    pages, listed, token = 0, [], None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": "repos/", "MaxKeys": 3}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        pages += 1
        listed += [obj["Key"] for obj in page.get("Contents", [])]
        assert page["KeyCount"] == len(page.get("Contents", []))
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert listed == sorted(k for k in keys if k.startswith("repos/"))
    assert pages == 3

    everything = s3.list_objects_v2(Bucket=bucket)
    assert [obj["Key"] for obj in everything["Contents"]] == sorted(keys)
    assert everything["Contents"][0]["Size"] == len(sorted(keys)[0])

    paginator = s3.get_paginator("list_objects_v2")
    via_paginator = [
        o["Key"]
        for p in paginator.paginate(Bucket=bucket, PaginationConfig={"PageSize": 2})
        for o in p.get("Contents", [])
    ]
    assert via_paginator == sorted(keys)

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["repos/", "uploads/"]
    assert [obj["Key"] for obj in top["Contents"]] == ["zzz"]

    after = s3.list_objects_v2(Bucket=bucket, StartAfter="repos/r05/link")
    assert [obj["Key"] for obj in after["Contents"]] == ["repos/r06/link", "uploads/u1", "uploads/u2", "zzz"]


def test_delete_objects(s3: Any, bucket: str) -> None:
    for key in ("d/1", "d/2", "d/3", "keep"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "d/1"}, {"Key": "d/2"}, {"Key": "d/3"}, {"Key": "d/never"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["d/1", "d/2", "d/3", "d/never"]
    assert not result.get("Errors")
    assert [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep"]

    s3.delete_object(Bucket=bucket, Key="keep")
    s3.delete_object(Bucket=bucket, Key="keep")  # deleting a missing key succeeds (204), as on AWS
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_multipart_upload(s3: Any, bucket: str) -> None:
    parts_data = [os.urandom(PART), os.urandom(PART), os.urandom(1234)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    parts = []
    for number, data in enumerate(parts_data, start=1):
        etag = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload_id, PartNumber=number, Body=data)["ETag"]
        assert etag == md5_etag(data)
        parts.append({"PartNumber": number, "ETag": etag})

    listed = s3.list_parts(Bucket=bucket, Key="big", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, PART), (2, PART), (3, 1234)]

    done = s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload_id, MultipartUpload={"Parts": parts})
    # The multipart ETag: md5 of the concatenated binary part md5s, then "-<number of parts>".
    joined = b"".join(hashlib.md5(d).digest() for d in parts_data)
    assert done["ETag"] == f'"{hashlib.md5(joined).hexdigest()}-3"'

    whole = b"".join(parts_data)
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["ContentLength"] == len(whole)
    assert got["Body"].read() == whole
    assert (
        s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={PART - 2}-{PART + 1}")["Body"].read()
        == (whole[PART - 2 : PART + 2])
    )
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_multipart_abort_leaves_no_parts(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="aborted")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="aborted", UploadId=upload_id, PartNumber=1, Body=os.urandom(PART))

    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("aborted", upload_id)]
    assert len(s3.list_parts(Bucket=bucket, Key="aborted", UploadId=upload_id)["Parts"]) == 1

    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=upload_id)

    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    with pytest.raises(ClientError) as excinfo:
        s3.list_parts(Bucket=bucket, Key="aborted", UploadId=upload_id)
    assert error_code(excinfo) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="aborted",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "x"}]},
        )
    assert error_code(excinfo) == (404, "NoSuchUpload")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_upload_part_copy_joins_objects(s3: Any, bucket: str) -> None:
    first, second, tail = os.urandom(PART), os.urandom(PART), os.urandom(777)
    s3.put_object(Bucket=bucket, Key="chunks/1", Body=first)
    s3.put_object(Bucket=bucket, Key="chunks/2", Body=second)

    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    etags = []
    for number, source in ((1, "chunks/1"), (2, "chunks/2")):
        copied = s3.upload_part_copy(
            Bucket=bucket,
            Key="joined",
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": source},
        )
        # SeaweedFS: this ETag is NOT the md5 of the part (it is "<md5 of its 4 MiB chunks' md5s>-<chunks>", and
        # unquoted); CompleteMultipartUpload wants it verbatim, and refuses the md5 with InvalidPart.
        etags.append(copied["CopyPartResult"]["ETag"])
    etags.append(s3.upload_part(Bucket=bucket, Key="joined", UploadId=upload_id, PartNumber=3, Body=tail)["ETag"])
    listed = s3.list_parts(Bucket=bucket, Key="joined", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, PART), (2, PART), (3, len(tail))]
    parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="joined", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert done["ETag"].endswith('-3"')

    expected = first + second + tail
    assert s3.get_object(Bucket=bucket, Key="joined")["Body"].read() == expected
    # The sources are untouched and can go: the joined object does not depend on them.
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "chunks/1"}, {"Key": "chunks/2"}]})
    assert s3.get_object(Bucket=bucket, Key="joined")["Body"].read() == expected


def test_upload_part_copy_range(s3: Any, bucket: str) -> None:
    source = os.urandom(PART + MiB)
    s3.put_object(Bucket=bucket, Key="source", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="ranged")["UploadId"]
    copied = s3.upload_part_copy(
        Bucket=bucket,
        Key="ranged",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "source"},
        CopySourceRange=f"bytes={MiB}-{MiB + PART - 1}",  # the last 5 MiB
    )
    small = s3.upload_part_copy(
        Bucket=bucket,
        Key="ranged",
        UploadId=upload_id,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "source"},
        CopySourceRange="bytes=0-99",
    )
    parts = [
        {"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": small["CopyPartResult"]["ETag"]},
    ]
    s3.complete_multipart_upload(Bucket=bucket, Key="ranged", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="ranged")["Body"].read() == source[MiB:] + source[:100]


def test_copy_object(s3: Any, bucket: str) -> None:
    data = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    result = s3.copy_object(Bucket=bucket, Key="dst/copy", CopySource={"Bucket": bucket, "Key": "src"})
    # SeaweedFS sends this ETag without the quotes AWS puts around it; head_object has them.
    assert result["CopyObjectResult"]["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert s3.head_object(Bucket=bucket, Key="dst/copy")["ETag"] == md5_etag(data)
    s3.delete_object(Bucket=bucket, Key="src")
    assert s3.get_object(Bucket=bucket, Key="dst/copy")["Body"].read() == data

    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="dst/none", CopySource={"Bucket": bucket, "Key": "src"})
    assert error_code(excinfo) == (404, "NoSuchKey")


def test_presigned_get_needs_no_credentials(seaweed: SeaweedS3, s3: Any, bucket: str) -> None:
    data = os.urandom(50_000)
    s3.put_object(Bucket=bucket, Key="blobs/sha256/ab/abcdef", Body=data)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "blobs/sha256/ab/abcdef"}, ExpiresIn=300
    )
    assert url.startswith(seaweed.endpoint) and "X-Amz-Signature=" in url

    response = httpx.get(url)  # no credentials, no AWS headers
    assert response.status_code == 200
    assert response.content == data

    ranged = httpx.get(url, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == data[:10]

    # Unsigned or tampered requests are refused: anonymous access is off.
    assert httpx.get(f"{seaweed.endpoint}/{bucket}/blobs/sha256/ab/abcdef").status_code == 403
    assert httpx.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403


def test_kill_then_restart_keeps_data() -> None:
    server = start_service(SeaweedS3, "SeaweedFS (weed mini)")
    try:
        s3 = server.client()
        server.create_bucket("crash")
        data = os.urandom(PART + 10)
        s3.put_object(Bucket="crash", Key="before", Body=data)

        server.kill()
        with pytest.raises(EndpointConnectionError):
            s3.get_object(Bucket="crash", Key="before")
        with pytest.raises(EndpointConnectionError):
            s3.put_object(Bucket="crash", Key="during", Body=b"x")

        server.restart()
        assert s3.get_object(Bucket="crash", Key="before")["Body"].read() == data
        s3.put_object(Bucket="crash", Key="after", Body=b"y")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="crash")["Contents"]] == ["after", "before"]

        server.restart(graceful=True)
        assert s3.get_object(Bucket="crash", Key="after")["Body"].read() == b"y"
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------------- PostgreSQL


def seeded(postgres: Postgres, name: str, *statements: str) -> str:
    """The DSN of a new database `name` in which `statements` ran."""
    dsn = postgres.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    return dsn


@contextmanager
def serializable_pair(dsn: str) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """Two connections to `dsn` whose transactions are SERIALIZABLE, closed afterwards."""
    a, b = psycopg.connect(dsn), psycopg.connect(dsn)
    try:
        for conn in (a, b):
            conn.isolation_level = IsolationLevel.SERIALIZABLE
        yield a, b
    finally:
        a.close()
        b.close()


def test_postgres_restart_keeps_data_and_clients_reconnect(postgres: Postgres) -> None:
    dsn = seeded(
        postgres,
        "smoke_restart",
        "CREATE TABLE blobs (digest text PRIMARY KEY, size bigint NOT NULL)",
        "INSERT INTO blobs VALUES ('sha256:aa', 10), ('sha256:bb', 20)",
    )

    pool = ConnectionPool(dsn, min_size=2, max_size=4, check=ConnectionPool.check_connection, open=True)
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM blobs").fetchone() == (2,)
        old = psycopg.connect(dsn, autocommit=True)

        postgres.restart()

        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
        old.close()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT digest, size FROM blobs ORDER BY digest").fetchall() == [
                ("sha256:aa", 10),
                ("sha256:bb", 20),
            ]
        # The pool drops its dead connections on checkout (check=) and hands out fresh ones.
        for _ in range(3):
            with pool.connection() as conn:
                assert conn.execute("SELECT sum(size) FROM blobs").fetchone() == (30,)
    finally:
        pool.close()


def test_postgres_serializable_write_skew_fails(postgres: Postgres) -> None:
    dsn = seeded(
        postgres,
        "smoke_serializable",
        "CREATE TABLE doctors (name text PRIMARY KEY, on_call boolean NOT NULL)",
        "INSERT INTO doctors VALUES ('alice', true), ('bob', true)",
    )
    with serializable_pair(dsn) as (a, b):
        # Each sees two doctors on call, so each thinks it may take one off call: together they break the rule.
        assert a.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone() == (2,)
        assert b.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone() == (2,)
        a.execute("UPDATE doctors SET on_call = false WHERE name = 'alice'")
        b.execute("UPDATE doctors SET on_call = false WHERE name = 'bob'")
        a.commit()
        with pytest.raises(psycopg.errors.SerializationFailure):
            b.commit()
        b.rollback()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone() == (1,)


def test_postgres_two_writers_one_row_blocks_then_fails(postgres: Postgres) -> None:
    """Two SERIALIZABLE transactions updating the same row: the second waits, then gets a SerializationFailure."""
    dsn = seeded(
        postgres,
        "smoke_same_row",
        "CREATE TABLE refs (name text PRIMARY KEY, n int NOT NULL)",
        "INSERT INTO refs VALUES ('x', 0)",
    )
    errors: list[BaseException] = []
    with serializable_pair(dsn) as (a, b):
        a.execute("UPDATE refs SET n = n + 1 WHERE name = 'x'")
        b.execute("SELECT 1")  # b's snapshot is taken before a commits

        def second() -> None:
            try:
                b.execute("UPDATE refs SET n = n + 1 WHERE name = 'x'")
                b.commit()
            except BaseException as e:
                errors.append(e)
                b.rollback()

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive()  # waiting for a's row lock
        a.commit()
        thread.join(10)
        assert [type(e) for e in errors] == [psycopg.errors.SerializationFailure]
