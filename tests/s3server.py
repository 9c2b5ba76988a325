"""Shared pieces for the store and publish tests: a moto S3 server on loopback, builds by hand.

Import the fixtures into a test module (``from s3server import moto_url, s3_env``);
the lead owns ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import types
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import boto3
import pytest

from render.build.snapshot import Snapshot
from render.build.tree import Build, FileEntry, content_type, write_object
from render.config import LighthouseConfig, SeoConfig, SiteConfig, SiteId, SiteSection, StoreConfig

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Fake credentials (and no user AWS config) for boto3, in this process and children."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    env = {**FAKE_ENV, "AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty)}
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


@pytest.fixture(scope="module")
def moto_url(s3_env: dict[str, str]) -> Iterator[str]:
    """A real S3 HTTP endpoint (moto in server mode) on 127.0.0.1, port chosen by the OS."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def new_bucket(endpoint: str) -> str:
    """Create a bucket with a fresh name on ``endpoint`` and return its name."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    admin_client(endpoint).create_bucket(Bucket=name)
    return name


def admin_client(endpoint: str) -> object:
    """A plain boto3 client for looking at the bucket behind the store's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def bucket_keys(endpoint: str, bucket: str, prefix: str = "") -> dict[str, int]:
    """key -> size of everything in the bucket under ``prefix``."""
    client = admin_client(endpoint)
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):  # type: ignore[attr-defined]
        for item in page.get("Contents", []):
            out[item["Key"]] = item["Size"]
    return out


def s3_config(endpoint: str, bucket: str, **overrides: object) -> StoreConfig:
    values: dict[str, object] = {
        "kind": "s3",
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "concurrency": 4,
        "max_attempts": 3,
    }
    values.update(overrides)
    return StoreConfig(**values)  # type: ignore[arg-type]


def site_config(
    root: Path,
    *,
    owner: str = "acme",
    name: str = "blog",
    base_url: str = "https://blog.example.com",
) -> SiteConfig:
    return SiteConfig(
        id=SiteId(owner=owner, name=name),
        root=root,
        path=root / "site.toml",
        site=SiteSection(base_url=base_url),
        queries=types.MappingProxyType({}),
        routes=(),
        seo=SeoConfig(),
        lighthouse=LighthouseConfig(),
    )


def make_build(
    work: Path,
    files: Mapping[str, bytes],
    *,
    owner: str = "acme",
    name: str = "blog",
    base_url: str = "https://blog.example.com",
) -> Build:
    """A Build of ``files`` (path -> bytes), objects written under ``work/objects``."""
    objects = work / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    entries = {}
    for path, data in sorted(files.items()):
        entries[path] = FileEntry(
            hash=write_object(objects, data), size=len(data), type=content_type(path)
        )
    site = site_config(work, owner=owner, name=name, base_url=base_url)
    snap = Snapshot(site=site.id, path=work / "snapshot.db", content_hash="", seconds=0.0, size=0)
    return Build(
        site=site,
        snapshot=snap,
        input_hash="",
        objects=objects,
        files=types.MappingProxyType(entries),
        pages=(),
        rendered=0,
        reused=0,
        seconds=0.0,
    )


def site_files(pages: int, *, edition: str = "") -> dict[str, bytes]:
    """A small site: ``pages`` articles, a home page, a stylesheet, a 404 page."""
    files = {
        "index.html": b"<!doctype html><title>Home</title><h1>Home</h1>",
        "404.html": b"<!doctype html><title>Not found</title>",
        "static/site.css": b"body{font-family:sans-serif}",
    }
    for i in range(pages):
        files[f"posts/p{i}/index.html"] = (
            f"<!doctype html><title>Post {i}</title><h1>Post {i}</h1>{edition}".encode()
        )
    return files


def env_for_child() -> dict[str, str]:
    """The current environment (with the fake credentials) for a subprocess."""
    return dict(os.environ)
