"""A build's objects folder: file bytes by their sha256, loose or in packs.

A loose object is ``objects/<sha256>``. A full build renders thousands of
pages, and creating one file per page is what costs most on this disk: 30 to
400 microseconds of kernel time each, varying from run to run, against about
330 microseconds for rendering the page. So each render process appends the
pages it renders (past its first few) to one pack file of its own,
``objects/packs/<name>.pack``; when the build has all its results, the parent
writes the pack's index, ``<name>.idx``: for every object its hash, offset and
size. A pack without an index belongs to a build that did not finish and is
removed by the next one.

Readers never see the difference: ``read`` and ``has`` take a hash. Objects
are stored once per build but may repeat across packs; any copy is the same
bytes. ``prune`` keeps what the current tree names: it drops packs with
nothing live, and rewrites packs that are mostly dead (or too many small
ones) into one: a pack is rewritten once less than half of its bytes are
live, so the folder holds at most about twice what one tree needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path

from render.files import replace_atomically

PACKS = "packs"
INCOMPLETE = ".incomplete"
"""Marker in an objects folder while a build may be writing partial objects."""

_ENTRY = struct.Struct(">32sQQ")  # raw sha256, offset, size
_MAGIC = b"render-pack-index-1\n"
_MAX_PACKS = 8  # past this many, the small packs are merged into one
_LIVE_SHARE = 0.5  # a pack with less than this share of live bytes is rewritten
_CHUNK = 1 << 20  # write_file copies this much at a time

Location = tuple[str, int, int]  # pack file name, offset, size


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Objects:
    """The objects folder of one site's build; the index of its packs loads on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._index: dict[str, Location] | None = None
        self._read: dict[str, list[tuple[str, int, int]]] = {}  # pack name -> its index
        # pack name -> an open file, closed with this object: a pack is only ever appended
        # to, and never rewritten in place (``_repack`` makes a new one), so an open file
        # stays true; a pack another process removed keeps its disk space until then
        self._fds: dict[str, int] = {}
        self._fds_lock = threading.Lock()
        weakref.finalize(self, _close_all, self._fds)

    # --- reading -----------------------------------------------------------

    def _packed(self) -> dict[str, Location]:
        if self._index is None:
            index: dict[str, Location] = {}
            for name, entries in self._indexes().items():
                for digest, offset, size in entries:
                    index.setdefault(digest, (name, offset, size))
            self._index = index
        return self._index

    def _indexes(self) -> dict[str, list[tuple[str, int, int]]]:
        """Every pack with an index: pack file name -> its entries."""
        found: dict[str, list[tuple[str, int, int]]] = {}
        try:
            names = set(os.listdir(self.folder / PACKS))
        except FileNotFoundError:
            return found
        for name in sorted(names):
            pack = f"{name[:-4]}.pack"
            if not name.endswith(".idx") or pack not in names:
                continue
            entries = self._read.get(pack)  # an index never changes once written
            if entries is None:
                entries = _read_index(self.folder / PACKS / name)
                if entries is None:
                    continue
                self._read[pack] = entries
            found[pack] = entries
        return found

    def has(self, digest: str) -> bool:
        return digest in self._packed() or (self.folder / digest).is_file()

    def hashes(self) -> set[str]:
        """Every object stored, loose or packed."""
        with os.scandir(self.folder) as entries:
            loose = {e.name for e in entries if len(e.name) == 64 and not e.name.startswith(".")}
        return loose | self._packed().keys()

    def loose(self, digest: str) -> Path | None:
        """The object's own file, when it has one."""
        path = os.path.join(self.folder, digest)
        return Path(path) if os.path.isfile(path) else None

    def bytes_or_file(self, digest: str) -> bytes | Path:
        """A packed object's bytes, or a loose object's file (a large one is not read whole)."""
        if digest in self._packed():
            return self.read(digest)
        return self.loose(digest) or self.read(digest)

    def read(self, digest: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when it is not stored."""
        where = self._packed().get(digest)
        if where is None:
            return (self.folder / digest).read_bytes()
        name, offset, size = where
        data = os.pread(self._fd(name), size, offset) if size else b""
        if len(data) != size:
            raise FileNotFoundError(f"{self.folder / PACKS / name}: object {digest} is cut short")
        return data

    def _fd(self, name: str) -> int:
        """The pack open for reading, once: one ``pread`` an object, not an open, read and close."""
        fd = self._fds.get(name)
        if fd is None:
            fd = os.open(self.folder / PACKS / name, os.O_RDONLY | os.O_CLOEXEC)
            with self._fds_lock:
                if name in self._fds:
                    os.close(fd)
                    return self._fds[name]
                self._fds[name] = fd
        return fd

    # --- writing -----------------------------------------------------------

    def write(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` as a loose object (once; atomically) and return its hash."""
        digest = digest or sha256(data)
        target = self.folder / digest
        if not target.exists():
            replace_atomically(target, data)
        return digest

    def write_file(self, fd: int, digest: str, *, size: int) -> bool:
        """Store the bytes ``fd`` holds as the object ``digest``, a megabyte at a time.

        For files too large to hold in memory whole (a site's static files).
        False, and nothing stored, unless they are ``size`` bytes that hash to
        ``digest``: no more than ``size + 1`` bytes are read.
        """
        target = self.folder / digest
        if target.exists():
            return True
        tmp = self.folder / f".{digest}.{os.getpid()}.tmp"
        hasher = hashlib.sha256()
        copied = 0
        try:
            with open(tmp, "wb") as out:
                while copied <= size and (chunk := os.read(fd, min(_CHUNK, size + 1 - copied))):
                    hasher.update(chunk)
                    out.write(chunk)
                    copied += len(chunk)
            if copied != size or hasher.hexdigest() != digest:
                return False
            os.replace(tmp, target)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def index_packs(self, packs: Mapping[str, Iterable[Location]]) -> None:
        """Write the index of each pack a build's render processes filled.

        ``packs`` maps a pack file name to its objects as (hash, offset, size).
        """
        for name, listed in packs.items():
            entries = list(listed)
            _write_index(self.folder / PACKS / f"{name[: -len('.pack')]}.idx", entries)
            self._read[name] = entries
            if self._index is not None:
                for digest, offset, size in entries:
                    self._index.setdefault(digest, (name, offset, size))

    # --- keeping the folder small --------------------------------------------

    def prune(self, keep: set[str]) -> None:
        """Remove what ``keep`` does not name: loose objects, and packs or their dead parts."""
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name not in keep and entry.name != PACKS and entry.name != INCOMPLETE:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        packs = self.folder / PACKS
        try:
            names = set(os.listdir(packs))
        except FileNotFoundError:
            return
        indexes = self._indexes()
        for name in names - set(indexes) - {f"{n[:-5]}.idx" for n in indexes}:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(packs / name)  # a pack whose build did not finish, or a temp file
        seen: set[str] = set()
        live: dict[str, list[tuple[str, int, int]]] = {}
        share: dict[str, float] = {}
        for name, pack_entries in sorted(indexes.items(), key=lambda kv: -len(kv[1])):
            mine = [e for e in pack_entries if e[0] in keep and e[0] not in seen]
            seen.update(e[0] for e in mine)
            live[name] = mine
            total = sum(e[2] for e in pack_entries) or 1
            share[name] = sum(e[2] for e in mine) / total
        dead = [n for n in live if not live[n]]
        rewrite = [n for n in live if live[n] and share[n] < _LIVE_SHARE]
        kept = [n for n in live if live[n] and n not in rewrite]
        if len(kept) + (1 if rewrite else 0) > _MAX_PACKS:
            # merge every pack but the largest few
            by_size = sorted(kept, key=lambda n: -sum(e[2] for e in live[n]))
            rewrite += by_size[_MAX_PACKS // 2 :]
        if rewrite:
            self._repack(rewrite, live)
        for name in dead + rewrite:
            for path in (packs / f"{name[:-5]}.idx", packs / name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self._index = None

    def _repack(self, names: list[str], live: Mapping[str, list[tuple[str, int, int]]]) -> None:
        """Copy the live objects of ``names`` into one new pack, indexed before the old go."""
        packs = self.folder / PACKS
        new = new_pack_name()
        entries: list[tuple[str, int, int]] = []
        offset = 0
        with open(packs / new, "xb") as out:
            for name in names:
                fd = os.open(packs / name, os.O_RDONLY)
                try:
                    for digest, at, size in live[name]:
                        data = os.pread(fd, size, at)
                        if len(data) != size:  # a pack cut short: the object is left out
                            continue
                        out.write(data)
                        entries.append((digest, offset, len(data)))
                        offset += len(data)
                finally:
                    os.close(fd)
        self.index_packs({new: entries})


def _close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def write_object_direct(objects: Path, data: bytes, digest: str) -> None:
    """Write a loose object straight under its final name (no temp file, no rename).

    Several times cheaper than ``Objects.write`` on this disk, but a crash can
    leave a partial object: only the build uses it, inside a window marked by
    ``INCOMPLETE`` so that the next build discards what it may have left.
    """
    try:
        fd = os.open(objects / digest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def new_pack_name() -> str:
    """A pack file name no other process or build uses."""
    return f"{os.getpid()}-{time.time_ns():x}.pack"


class PackWriter:
    """One render process's pack: appends objects, remembers where each went.

    Objects collect in a buffer written out a megabyte at a time (one write
    call a page cost about 10 microseconds of the page's 300); ``flush`` writes
    the rest, and the process flushes before it reports a chunk done, so the
    parent never indexes bytes that are not in the file.
    """

    _FLUSH_BYTES = 1 << 20

    def __init__(self, folder: Path) -> None:
        (folder / PACKS).mkdir(exist_ok=True)
        self.name = new_pack_name()
        self._fd = os.open(
            folder / PACKS / self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644
        )
        self._offset = 0
        self._buffer = bytearray()
        self._where: dict[str, int] = {}

    def add(self, data: bytes, digest: str) -> int:
        """Append ``data`` (unless this pack has it already); its offset in the pack."""
        found = self._where.get(digest)
        if found is not None:
            return found
        offset = self._where[digest] = self._offset
        self._offset += len(data)
        self._buffer += data
        if len(self._buffer) >= self._FLUSH_BYTES:
            self.flush()
        return offset

    def flush(self) -> None:
        if self._buffer:
            _write_all(self._fd, self._buffer)
            self._buffer = bytearray()

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def _write_index(path: Path, entries: Iterable[tuple[str, int, int]]) -> None:
    body = b"".join(_ENTRY.pack(bytes.fromhex(d), offset, size) for d, offset, size in entries)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(_MAGIC + body + hashlib.sha256(body).digest())
    os.replace(tmp, path)


def _read_index(path: Path) -> list[tuple[str, int, int]] | None:
    """A pack index's entries; None when it is damaged (the pack is then not used)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    body = data[len(_MAGIC) : -32]
    if (
        not data.startswith(_MAGIC)
        or len(body) % _ENTRY.size
        or hashlib.sha256(body).digest() != data[-32:]
    ):
        return None
    return [(raw.hex(), offset, size) for raw, offset, size in _ENTRY.iter_unpack(body)]
