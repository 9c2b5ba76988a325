"""The two stores keep one contract: the local folder and S3 (moto server over HTTP on loopback)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Reply
from s3server import admin_client, moto_url, new_bucket, s3_config, s3_env

from render.errors import PublishError
from render.publish.store import LocalStore, S3Store, Store

__all__ = ["moto_url", "s3_env"]  # fixtures used by name below

logging.getLogger("werkzeug").setLevel(logging.ERROR)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    endpoint = request.getfixturevalue("moto_url")
    s3 = S3Store(s3_config(endpoint, new_bucket(endpoint), prefix="pre/fix"))
    yield s3
    s3.close()


def test_get_put_list_delete_round_trip(store: Store, tmp_path: Path) -> None:
    assert store.get("sites/a/b/root.json") is None
    assert not store.exists("sites/a/b/root.json")
    store.put("sites/a/b/blobs/x", b"hello", content_type="text/plain", cache_control="no-cache")
    source = tmp_path / "file.bin"
    source.write_bytes(b"\x00" * 1000)
    store.put_file(
        "sites/a/b/blobs/y",
        source,
        content_type="application/octet-stream",
        cache_control="no-cache",
    )
    assert store.get("sites/a/b/blobs/x") == b"hello"
    assert store.exists("sites/a/b/blobs/y")
    dest = tmp_path / "out.bin"
    assert store.download("sites/a/b/blobs/y", dest)
    assert dest.read_bytes() == source.read_bytes()
    assert not store.download("sites/a/b/blobs/missing", tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    listed = store.list("sites/a/b/blobs/")
    assert [(o.key, o.size) for o in listed] == [
        ("sites/a/b/blobs/x", 5),
        ("sites/a/b/blobs/y", 1000),
    ]
    store.delete(["sites/a/b/blobs/x", "sites/a/b/blobs/not-there"])
    assert store.get("sites/a/b/blobs/x") is None
    assert [o.key for o in store.list("sites/")] == ["sites/a/b/blobs/y"]


def test_sites_are_the_folders_with_a_root(store: Store) -> None:
    for key in (
        "sites/acme/blog/root.json",
        "sites/acme/docs/root.json",
        "sites/zed/shop/root.json",
    ):
        store.put(key, b"{}", content_type="application/json", cache_control="no-cache")
    store.put("sites/acme/draft/blobs/x", b"x", content_type="text/plain", cache_control="x")
    assert store.sites() == [("acme", "blog"), ("acme", "docs"), ("zed", "shop")]


def test_put_if_is_a_compare_and_swap(store: Store) -> None:
    key = "sites/a/b/root.json"
    args = {"content_type": "application/json", "cache_control": "no-cache"}
    assert store.put_if(key, b"first", tag=None, **args)
    assert not store.put_if(key, b"second creator", tag=None, **args)
    got = store.get_tagged(key)
    assert got is not None
    data, tag = got
    assert data == b"first"
    assert store.put_if(key, b"second", tag=tag, **args)
    assert not store.put_if(key, b"stale writer", tag=tag, **args)  # the tag moved on
    assert store.get(key) == b"second"
    assert not store.put_if("sites/a/b/other.json", b"x", tag=tag, **args)  # tag but no object
    assert store.get("sites/a/b/other.json") is None


def test_local_store_refuses_keys_that_leave_its_folder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(PublishError, match="refusing the key"):
        store.put("sites/../../etc/x", b"x", content_type="text/plain", cache_control="x")
    assert not (tmp_path / "etc").exists()


def test_s3_prefix_keeps_keys_inside_it(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    store = S3Store(s3_config(moto_url, bucket, prefix="/tenant-a/"))
    store.put("sites/a/b/root.json", b"{}", content_type="application/json", cache_control="x")
    keys = [o["Key"] for o in admin_client(moto_url).list_objects_v2(Bucket=bucket)["Contents"]]  # type: ignore[attr-defined]
    assert keys == ["tenant-a/sites/a/b/root.json"]
    assert store.sites() == [("a", "b")]


def test_uploads_send_no_trailing_checksums_that_r2_rejects(moto_url: str) -> None:
    with FaultProxy(moto_url).running() as proxy:
        store = S3Store(s3_config(proxy.url, new_bucket(moto_url)))
        store.put("k", b"x" * 2000, content_type="text/html", cache_control="x")
    (entry,) = [e for e in proxy.entries() if e.method == "PUT" and e.path.endswith("/k")]
    headers = {k.lower(): v for k, v in entry.headers}
    assert not [h for h in headers if h.startswith("x-amz-checksum") or h == "x-amz-trailer"]
    assert "aws-chunked" not in headers.get("content-encoding", "")
    assert headers["content-length"] == "2000"


def test_large_files_upload_in_parts(moto_url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (6 * 4096))  # 6 MiB: two parts of 5 MiB minimum
    with FaultProxy(moto_url).running() as proxy:
        store = S3Store(s3_config(proxy.url, new_bucket(moto_url), multipart_threshold_mb=5))
        store.put_file("sites/a/b/blobs/big", big, content_type="video/mp4", cache_control="x")
        assert store.get("sites/a/b/blobs/big") == big.read_bytes()
    assert proxy.count("POST", contains="/blobs/big") == 2  # create + complete
    assert sum(1 for e in proxy.entries() if e.method == "PUT" and "partNumber" in e.query) == 2


def test_missing_bucket_is_one_clear_line(moto_url: str) -> None:
    store = S3Store(s3_config(moto_url, "no-such-bucket"))
    with pytest.raises(PublishError) as info:
        store.get("sites/a/b/root.json")
    assert info.value.message == f"bucket 'no-such-bucket' does not exist at {moto_url}"


def test_refused_credentials_name_the_store_and_never_the_secret(
    moto_url: str, s3_env: dict[str, str]
) -> None:
    with FaultProxy(
        moto_url, rules=[lambda r: Reply(403, "InvalidAccessKeyId", "no such key id")]
    ).running() as proxy:
        store = S3Store(s3_config(proxy.url, "files"))
        with pytest.raises(PublishError) as info:
            store.put("sites/a/b/blobs/x", b"x", content_type="text/plain", cache_control="x")
    message = info.value.message
    assert message == (
        f"s3://files ({proxy.url}) refused the credentials (InvalidAccessKeyId) on upload sites/a/b/blobs/x"
    )
    assert "\n" not in message
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in message + (info.value.hint or "")
    assert proxy.count("PUT") == 1  # a refusal is not retried


def test_unreachable_endpoint_is_one_clear_line(s3_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3Store(s3_config(f"http://127.0.0.1:{port}", "files", max_attempts=1))
    with pytest.raises(
        PublishError, match=rf"^publish: cannot reach http://127.0.0.1:{port} for bucket 'files'"
    ):
        store.get("sites/a/b/root.json")
