"""Object stores behind one small interface: a local folder and S3-compatible (R2).

Both hold the same layout (see ``render.publish.manifest``). Keys passed to a store
are relative to its prefix. The root switch is a compare-and-swap:
``put_if(key, data, tag=...)`` writes only when the object still carries the
``tag`` returned by ``get_tagged`` (or, with ``tag=None``, does not exist yet).
The local store does that with a lock and an atomic rename; S3/R2 with
``If-Match`` / ``If-None-Match`` on PutObject.

A store may also take a publish's new blobs in one batch (``BlobBatches``):
the local store writes each once, straight into a staging folder, makes them
durable with one ``syncfs`` and only then names them (see ``put_blobs``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from render.config import HostConfig, StoreConfig
from render.errors import PublishError
from render.files import flocked, replace_durably
from render.publish.blobwrite import (
    BLOB_MODE,
    BatchProgress,
    BlobSource,
    link_or_copy,
    write_named_last,
    write_new,
)
from render.publish.s3errors import MISSING, PRECONDITION, code_of, is_botocore, s3_error


@dataclass(frozen=True, kw_only=True)
class StoredObject:
    key: str
    size: int
    modified: float  # seconds since the epoch


@runtime_checkable
class Store(Protocol):
    """What publish, rollback, gc, serve and the mirror need from an object store."""

    description: str  # "local folder /x" or "s3://bucket (endpoint)", for messages
    concurrency: int  # uploads a publish runs at the same time

    def get(self, key: str) -> bytes | None:
        """The object's bytes; None when the key does not exist."""
        ...

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        """The bytes and a tag (ETag) to pass to ``put_if``; None when missing."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        """``length`` bytes of the object from ``start`` (one ranged GET); None when it is missing.

        Fewer bytes come back when the object is shorter: the caller checks
        what it reads against the hash it expects.
        """
        ...

    def download(self, key: str, dest: Path) -> bool:
        """Stream the object into ``dest`` (atomically); False when missing."""
        ...

    def exists(self, key: str) -> bool: ...

    def sites(self) -> list[tuple[str, str]]:
        """(owner, name) of every site that has a root.json (may LIST)."""
        ...

    def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None: ...

    def put_file(self, key: str, path: Path, *, content_type: str, cache_control: str) -> None: ...

    def put_if(
        self, key: str, data: bytes, *, tag: str | None, content_type: str, cache_control: str
    ) -> bool:
        """Write only if the object still has ``tag`` (None: does not exist). False if not."""
        ...

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix``."""
        ...

    def delete(self, keys: Sequence[str]) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """A readable file holding the object, for stores that are folders; else None."""
        ...

    def request_count(self) -> int:
        """Requests made so far (HTTP attempts for S3, operations for a folder)."""
        ...

    def close(self) -> None: ...


def open_store(host: HostConfig) -> Store:
    """The store ``render.toml``'s ``[store]`` names."""
    if host.store.kind == "s3":
        return S3Store(host.store)
    return LocalStore(host.store_path, concurrency=min(host.store.concurrency, 8))


# --- local folder ----------------------------------------------------------


class LocalStore:
    """A folder with exactly the bucket layout. Writes are atomic renames.

    ``download`` hard-links the object when ``dest`` is on the same file system:
    the store never writes into a file in place (every write makes a new file
    and renames it), so a link reads as a copy would, without writing the
    bytes again.
    """

    def __init__(self, root: Path, *, concurrency: int = 4) -> None:
        self.root = root.absolute()
        self._root = str(self.root)
        self.concurrency = concurrency
        self.description = f"local folder {self.root}"
        self._count = 0
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        """The key's file as a string (a mirror's first sync looks up 10,000s)."""
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise PublishError(f"{self.description}: refusing the key {key!r}")
        return os.path.join(self._root, key)

    def _tick(self) -> None:
        with self._lock:
            self._count += 1

    def request_count(self) -> int:
        return self._count

    def get(self, key: str) -> bytes | None:
        self._tick()
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("read", key, exc) from None

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        data = self.get(key)
        return None if data is None else (data, _tag(data))

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        self._tick()
        try:
            fd = os.open(self._file(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("read", key, exc) from None
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def download(self, key: str, dest: Path) -> bool:
        self._tick()
        source = self._path(key)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            link_or_copy(source, tmp)
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if not source.exists():
                return False
            raise
        os.replace(tmp, dest)
        return True

    def link(self, key: str, dest: str | Path) -> bool:
        """``dest`` (which must not exist) becomes the object: a hard link; False when missing.

        On another file system, a read-only copy renamed into place: either
        way ``dest`` appears whole or not at all.
        """
        self._tick()
        source = self._file(key)
        try:
            os.link(source, dest)
            return True
        except FileNotFoundError:
            if not os.path.exists(source):
                return False
            raise
        except OSError:  # another file system, or one without hard links
            target = Path(dest)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
            try:
                shutil.copyfile(source, tmp)
                os.chmod(tmp, BLOB_MODE)
                os.replace(tmp, target)
            except FileNotFoundError:
                tmp.unlink(missing_ok=True)
                return False
            return True

    def exists(self, key: str) -> bool:
        self._tick()
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def sites(self) -> list[tuple[str, str]]:
        self._tick()
        base = self.root / "sites"
        if not base.is_dir():
            return []
        return sorted((p.parent.parent.name, p.parent.name) for p in base.glob("*/*/root.json"))

    def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None:
        self._tick()
        self._write(self._path(key), data)

    def put_file(self, key: str, path: Path, *, content_type: str, cache_control: str) -> None:
        self._tick()
        target = self._path(key)
        tmp = self._tmp(target)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._error("write", key, exc) from None

    def put_if(
        self, key: str, data: bytes, *, tag: str | None, content_type: str, cache_control: str
    ) -> bool:
        self._tick()
        target = self._path(key)
        with self._locked(target):
            try:
                current: str | None = _tag(target.read_bytes())
            except FileNotFoundError:
                current = None
            if current != tag:
                return False
            self._write(target, data)
            return True

    def list(self, prefix: str) -> list[StoredObject]:
        self._tick()
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        out: list[StoredObject] = []
        if not base.is_dir():
            return out
        for dirpath, dirs, names in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # a publish's staging folders
            for name in names:
                if name.startswith("."):
                    continue  # temporary files and locks
                full = Path(dirpath) / name
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                key = full.relative_to(self.root).as_posix()
                out.append(StoredObject(key=key, size=st.st_size, modified=st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._tick()
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()

    def close(self) -> None:
        pass

    def put_blobs(
        self,
        folder: str,
        digests: Collection[str],
        source: BlobSource,
        *,
        progress: BatchProgress | None = None,
        replace: bool = False,
    ) -> int:
        """``BlobBatches.put_blobs``: one write per new blob, one ``syncfs`` for them all.

        See ``render.publish.blobwrite``. A blob already there is not written
        again; its time is touched, as a write would, so that a gc's grace
        period (which spares young unnamed blobs) counts from this publish.
        """
        target = self._path(folder)
        try:
            present = set() if replace else set(os.listdir(target))
        except FileNotFoundError:
            present = set()
        for digest in digests:
            if digest in present:
                self._tick()
                with contextlib.suppress(FileNotFoundError):
                    os.utime(target / digest)
        new = [d for d in dict.fromkeys(digests) if d not in present]

        def write(path: str, digest: str) -> None:
            self._tick()
            write_new(path, source(digest), mode=BLOB_MODE)

        try:
            return write_named_last(target, new, write, progress=progress)
        except OSError as exc:
            raise self._error("write", f"{folder}/", exc) from None

    # --- helpers -------------------------------------------------------------

    def _tmp(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            replace_durably(target, data)  # the store is what every reader trusts
        except OSError as exc:
            raise self._error("write", target.relative_to(self.root).as_posix(), exc) from None

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        target.parent.mkdir(parents=True, exist_ok=True)
        with flocked(target.with_name(f".{target.name}.lock")):
            yield

    def _error(self, action: str, key: str, exc: OSError) -> PublishError:
        return PublishError(
            f"{self.description}: cannot {action} {key}: {exc.strerror or exc}",
            hint="check the folder's permissions and free space ([store] path in render.toml)",
        )


def _tag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def describe(config: StoreConfig, root: Path | None = None) -> str:
    """A one-line description of a store config, without credentials."""
    if config.kind == "s3":
        where = config.endpoint_url or "AWS"
        prefix = f"/{config.prefix.strip('/')}" if config.prefix.strip("/") else ""
        return f"s3://{config.bucket}{prefix} ({where})"
    return f"local folder {root}" if root else "local folder"


# --- S3 / R2 -----------------------------------------------------------------


class S3Store:
    """A bucket on R2 or any S3-compatible store, through boto3.

    The client uses botocore's ``standard`` retry mode (backoff on throttling,
    5xx and dropped connections), a connection pool as large as the upload
    concurrency, path-style addressing for custom endpoints, and checksums only
    when an operation requires them (``when_required``): the default since
    boto3 1.36 sends trailing CRC checksums that R2 has rejected.
    Credentials come from the AWS environment variables or ``[store] profile``.
    """

    def __init__(self, config: StoreConfig) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        self.bucket = config.bucket
        self.endpoint = config.endpoint_url or "AWS S3"
        prefix = config.prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.description = describe(config)
        self.concurrency = config.concurrency
        self.multipart_threshold = max(5, config.multipart_threshold_mb) * 1024 * 1024
        self._count = 0
        self._lock = threading.Lock()
        try:
            session = boto3.session.Session(profile_name=config.profile or None)
            client_config = Config(
                retries={"mode": "standard", "total_max_attempts": config.max_attempts},
                max_pool_connections=config.concurrency + 4,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=10,
                read_timeout=60,
                tcp_keepalive=True,
                s3={"addressing_style": "path"} if config.endpoint_url else None,
            )
            self._client: Any = session.client(
                "s3",
                endpoint_url=config.endpoint_url or None,
                region_name=config.region or None,
                config=client_config,
            )
        except BotoCoreError as exc:
            raise PublishError(
                f"{self.description}: cannot make a client: {exc}",
                hint="check [store] profile, region and endpoint_url in render.toml",
            ) from None
        self._client.meta.events.register("before-send.s3", self._count_send)

    def _count_send(self, **_kwargs: object) -> None:
        with self._lock:
            self._count += 1

    def request_count(self) -> int:
        return self._count

    def _key(self, key: str) -> str:
        return self.prefix + key

    # --- reads ---------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        got = self.get_tagged(key)
        return None if got is None else got[0]

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = response["Body"].read()
        except Exception as exc:
            if code_of(exc) in MISSING:
                return None
            raise self._error(exc, "read", key) from None
        return body, str(response.get("ETag", ""))

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        if length <= 0:
            return b""
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            body: bytes = response["Body"].read()
        except Exception as exc:
            if code_of(exc) in MISSING:
                return None
            if code_of(exc) == "InvalidRange":  # the object ends before ``start``: truncated
                return b""
            raise self._error(exc, "read", key) from None
        return body

    def download(self, key: str, dest: Path) -> bool:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with open(tmp, "wb") as fh:
                for chunk in response["Body"].iter_chunks(1 << 20):
                    fh.write(chunk)
        except Exception as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if code_of(exc) in MISSING:
                return False
            if isinstance(exc, OSError) and not is_botocore(exc):
                raise
            raise self._error(exc, "download", key) from None
        os.replace(tmp, dest)
        return True

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if code_of(exc) in MISSING:
                return False
            raise self._error(exc, "check", key) from None
        return True

    def local_path(self, key: str) -> Path | None:
        return None

    def _common_prefixes(self, prefix: str) -> list[str]:
        out: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix), Delimiter="/"
            )
            for page in pages:
                for item in page.get("CommonPrefixes", []):
                    out.append(item["Prefix"][len(self.prefix) :])
        except Exception as exc:
            raise self._error(exc, "list", prefix) from None
        return out

    def sites(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for owner_prefix in self._common_prefixes("sites/"):
            for site_prefix in self._common_prefixes(owner_prefix):
                _, owner, name, _ = site_prefix.split("/", 3)
                if self.exists(f"{site_prefix}root.json"):
                    found.append((owner, name))
        return sorted(found)

    def list(self, prefix: str) -> list[StoredObject]:
        out: list[StoredObject] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                for item in page.get("Contents", []):
                    out.append(
                        StoredObject(
                            key=item["Key"][len(self.prefix) :],
                            size=int(item["Size"]),
                            modified=item["LastModified"].timestamp(),
                        )
                    )
        except Exception as exc:
            raise self._error(exc, "list", prefix) from None
        return out

    # --- writes --------------------------------------------------------------

    def _put_object(
        self, key: str, data: bytes, content_type: str, cache_control: str, **condition: str
    ) -> None:
        self._client.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ContentType=content_type,
            CacheControl=cache_control,
            **condition,
        )

    def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None:
        try:
            self._put_object(key, data, content_type, cache_control)
        except Exception as exc:
            raise self._error(exc, "upload", key) from None

    def put_file(self, key: str, path: Path, *, content_type: str, cache_control: str) -> None:
        if path.stat().st_size < self.multipart_threshold:
            self.put(key, path.read_bytes(), content_type=content_type, cache_control=cache_control)
            return
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_threshold,
            max_concurrency=4,
        )
        try:  # s3transfer aborts the multipart upload when a part fails
            self._client.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                ExtraArgs={"ContentType": content_type, "CacheControl": cache_control},
                Config=transfer,
            )
        except Exception as exc:
            raise self._error(exc, "upload", key) from None

    def put_if(
        self, key: str, data: bytes, *, tag: str | None, content_type: str, cache_control: str
    ) -> bool:
        condition = {"IfMatch": tag} if tag is not None else {"IfNoneMatch": "*"}
        try:
            self._put_object(key, data, content_type, cache_control, **condition)
        except Exception as exc:
            code = code_of(exc)
            # If-Match on a key that vanished is a failed condition too (some stores say 404).
            if code in PRECONDITION or (tag is not None and code in MISSING):
                return False
            raise self._error(exc, "write", key) from None
        return True

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            try:
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except Exception as exc:
                raise self._error(exc, "delete", keys[start]) from None
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise PublishError(
                    f"{self.description}: cannot delete {first.get('Key')}: {first.get('Code')}"
                    f" ({len(errors)} keys not deleted)",
                    hint="check that the credentials may delete objects in the bucket",
                )

    def close(self) -> None:
        self._client.close()

    # --- errors --------------------------------------------------------------

    def _error(self, exc: Exception, action: str, key: str) -> Exception:
        """One clear line for an expected failure; anything else is returned unchanged."""
        return s3_error(
            exc, action, key, description=self.description, bucket=self.bucket, where=self.endpoint
        )
