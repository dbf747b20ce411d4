"""Object storage through pyarrow's S3 filesystem, against a moto server on loopback."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipeline.common.storage import Storage, open_storage
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.parquet import ParquetSink
from pipeline.sources import discover_files, iter_rows

CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket="exports")
    yield url
    server.stop()


@pytest.fixture
def storage(endpoint: str) -> Storage:
    return open_storage(f"s3://exports/{uuid.uuid4().hex}", endpoint_url=endpoint, **CREDENTIALS)


def test_sinks_publish_objects_that_read_back(storage: Storage) -> None:
    with JsonlSink(storage, "d", compression="gzip") as sink:
        sink.write_page(b'{"id":"a"}\n')
        published = sink.flush()
        sink.write_page(b'{"id":"b"}\n')
        published += sink.close()
    with ParquetSink(storage, "p", "dataset") as psink:
        psink.write_page(b'{"id":"c","input":{"n":18446744073709551615}}')
        published += psink.close()
    paths = ["d/part-00000.jsonl.gz", "d/part-00001.jsonl.gz", "p/part-00000.parquet"]
    assert [f.path for f in published] == paths == storage.list_files() == discover_files(storage, "")
    for info in published:  # stored exactly as written (no second compression on upload)
        data = storage.read_bytes(info.path)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (info.bytes, info.sha256)
    rows = [r.row for path in paths for batch in iter_rows(storage, path) for r in batch]
    assert rows == [{"id": "a"}, {"id": "b"}, {"id": "c", "input": {"n": 2**64 - 1}}]


def test_aborted_write_creates_no_object(storage: Storage) -> None:
    with pytest.raises(RuntimeError), storage.open_atomic("x/y.json") as fh:
        fh.write(b"partial")
        raise RuntimeError("stop")
    assert not storage.exists("x/y.json")
    assert storage.list_files() == []


def test_read_list_delete(storage: Storage) -> None:
    storage.write_bytes("a/1.json", b"one")
    storage.write_bytes("a/2.json", b"two")
    storage.write_bytes("b.json", b"three")
    assert storage.list_files("a/") == ["a/1.json", "a/2.json"]
    with storage.open_read("a/2.json") as fh:
        assert fh.read() == b"two"
    storage.delete("a/1.json")
    assert storage.list_files() == ["a/2.json", "b.json"]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("a/1.json")
    assert storage.cleanup_temp() == []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_content_addressed_write(storage: Storage, tmp_path: Path, where: str) -> None:
    """``open_atomic(..., final=name)``: published under the name decided once the bytes are
    written (an attachment named by its SHA-256), nothing under the temp name."""
    target = storage if where == "s3" else open_storage(str(tmp_path))
    digest = hashlib.sha256()
    with target.open_atomic("_attachments/sha256=incoming", final=lambda: f"_attachments/sha256={digest.hexdigest()}") as fh:  # fmt: skip
        for chunk in (b"first ", b"second"):
            digest.update(chunk)
            fh.write(chunk)
    name = f"_attachments/sha256={hashlib.sha256(b'first second').hexdigest()}"
    assert target.list_files() == [name]
    assert target.read_bytes(name) == b"first second"


def test_a_key_denied_asking_about_the_bucket_may_still_read_its_prefix() -> None:
    """S3 answers 403 to HeadBucket for a key whose ListBucket is limited to a prefix (GCS
    without storage.buckets.get likewise): the bucket is taken as there, and the prefix read."""
    from pipeline.common.errors import BtpipeError
    from pipeline.common.storage import ObjectStorage

    class Denied:
        def get_file_info(self, path: str) -> None:
            raise OSError(
                f"When getting information for bucket '{path}': AWS Error ACCESS_DENIED during HeadBucket"
            )

    class Unreachable:
        def get_file_info(self, path: str) -> None:
            raise OSError("AWS Error NETWORK_CONNECTION during HeadBucket")

    assert ObjectStorage("s3://bkt/pre", Denied(), "bkt/pre").has_bucket()
    with pytest.raises(BtpipeError, match="cannot read s3://bkt/pre"):
        ObjectStorage("s3://bkt/pre", Unreachable(), "bkt/pre").has_bucket()
