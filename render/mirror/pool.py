"""The folders a site's kept releases share: a pool of folders named by their content.

::

    <mirror>/releases/<owner>/<site>/.d/<h>/        one folder, shared by every release that has it
    <mirror>/releases/<owner>/<site>/.d/<h>/<file>  a hard link to the blob (as in a release)
    <mirror>/releases/<owner>/<site>/.d/<h>/<name>  a subfolder: symlink ../<h2>
    <mirror>/releases/<owner>/<site>/<version>/<name>  a release's subfolder: symlink ../.d/<h>

``<h>`` is 16 hex characters of the sha256 of the folder's listing: each
file's name and blob hash, each subfolder's name and ``<h>`` (a version tree
has no file modes: every file is served read-only). A folder that did not
change between two versions has the same ``<h>``, so every kept release
shares it, and a new version makes only the folders that changed and their
ancestors: a one-page change of a 10,000-page site makes a handful of folders,
not 10,000 (a folder costs 4 KiB on disk; its symlink, under 60 bytes, none).

A release folder stays a real directory: ``current``, ``previous``,
``/_v/<version>/`` and nginx's ``$realpath_root`` name it, and its files
(the root's) are hard links as before. The symlinks are relative and short
(ext4 keeps them in the inode), and each names a pool folder by its hash: none
can point outside the site's releases folder.

A pool folder never changes once named. A new one is built in the release's
partial folder, moved whole under ``.pool-<version>/<h>`` (``stage``), made
durable with the rest of the release, and only then renamed to ``.d/<h>``
(``name``, deepest first, so a named folder's subfolders are named). ``prune``
deletes the folders no release on disk reaches, found from the releases'
symlinks themselves (not by hashing their trees again, so a change of the
listing format can never make it delete a folder in use); it renames a folder
out of the pool before deleting it, so a half-deleted folder never has a name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from render.build.tree import FileEntry
from render.files import sync_folder
from render.mirror.layout import POOL

HASH_CHARS = 16
_NAME_RE = re.compile(r"^[0-9a-f]{16}$")
_FORMAT = b"render-pool-1\x00"  # in every hash: a new listing format names new folders
_GONE = ".gone-"  # a folder being deleted: out of the pool first


class Clash(ValueError):
    """A version tree names one path as a file and as a folder."""


@dataclass(frozen=True)
class Folders:
    """A version tree's folders: each one's ``<h>`` and its subfolders' names."""

    hashes: Mapping[str, str]  # folder ("" for the release root, "posts/x") -> <h>
    subfolders: Mapping[str, tuple[str, ...]]  # folder -> the names of its subfolders

    def deepest_first(self) -> list[str]:
        return sorted(self.hashes, key=lambda f: (-_depth(f), f))


def _depth(folder: str) -> int:
    return folder.count("/") + 1 if folder else 0


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def folders_of(files: Mapping[str, FileEntry]) -> Folders:
    """Each folder's ``<h>``, from the files' paths (already checked safe) and blob hashes.

    Raises ``Clash`` when a path is both a file and a folder.
    """
    listed: dict[str, dict[str, str]] = {"": {}}  # folder -> file name -> blob hash
    subs: dict[str, set[str]] = {"": set()}
    for path, entry in files.items():
        folder, _, name = path.rpartition("/")
        listed.setdefault(folder, {})[name] = entry.hash
        while folder:  # each ancestor names its subfolder
            parent, _, sub = folder.rpartition("/")
            children = subs.setdefault(parent, set())
            if sub in children:
                break  # and its ancestors already do
            children.add(sub)
            listed.setdefault(parent, {})
            folder = parent
    hashes: dict[str, str] = {}
    for folder in sorted(listed, key=lambda f: (-_depth(f), f)):
        names = listed[folder]
        children = subs.get(folder, set())
        h = hashlib.sha256(_FORMAT)
        for name in sorted({*names, *children}):
            if name in names and name in children:
                raise Clash(f"{_join(folder, name)!r} is both a file and a folder")
            if name in names:
                h.update(b"f\x00" + name.encode() + b"\x00" + names[name].encode() + b"\x00")
            else:
                child = hashes[_join(folder, name)]
                h.update(b"d\x00" + name.encode() + b"\x00" + child.encode() + b"\x00")
        hashes[folder] = h.hexdigest()[:HASH_CHARS]
    return Folders(hashes=hashes, subfolders={f: tuple(sorted(c)) for f, c in subs.items() if c})


def existing(pool: Path) -> set[str]:
    """The ``<h>`` of every named pool folder."""
    try:
        return {n for n in os.listdir(pool) if _NAME_RE.match(n)}
    except FileNotFoundError:
        return set()


def to_make(folders: Folders, have: set[str]) -> dict[str, str]:
    """``<h>`` -> the folder that makes it, for each folder the pool lacks (never the root).

    Two folders with one listing are one pool folder: the first by path makes it.
    """
    make: dict[str, str] = {}
    for folder in sorted(folders.hashes):
        h = folders.hashes[folder]
        if folder and h not in have:
            make.setdefault(h, folder)
    return make


def stage(partial: Path, folders: Folders, make: Mapping[str, str], staging: Path) -> None:
    """Turn the partial release into its root and the pool folders it adds, all unnamed.

    ``partial`` holds the files of the folders in ``make`` and of the root. Deepest
    first, each such folder gets its subfolders as symlinks ``../<h>`` and moves to
    ``staging/<h>``; the root's subfolders become symlinks ``../.d/<h>``. What else
    the partial holds (a folder the pool has, placed by an earlier run) is removed.
    """
    staging.mkdir(exist_ok=True)
    for folder in folders.deepest_first():
        h = folders.hashes[folder]
        if not folder or make.get(h) != folder:
            continue
        here = os.path.join(partial, folder)
        if not os.path.isdir(here):  # a folder of subfolders only, all of them pooled
            os.makedirs(here)
        _link_subfolders(here, folders, folder, prefix="../")
        os.rename(here, os.path.join(staging, h))
    _link_subfolders(str(partial), folders, "", prefix=f"../{POOL}/")


def _link_subfolders(here: str, folders: Folders, folder: str, *, prefix: str) -> None:
    for name in folders.subfolders.get(folder, ()):
        entry = os.path.join(here, name)
        target = prefix + folders.hashes[_join(folder, name)]
        if os.path.islink(entry):
            if os.readlink(entry) == target:
                continue
            os.unlink(entry)
        elif os.path.lexists(entry):
            shutil.rmtree(entry)  # hard links only: the pool has this folder
        os.symlink(target, entry)


def name(staging: Path, pool: Path, hashes: Iterable[str]) -> None:
    """Rename each staged folder to ``pool/<h>`` (in the order given: deepest first); the
    staging folder itself becomes the pool when there is none yet.

    Call only once the staged folders are durable (``syncfs``): a named folder is whole.
    """
    if not os.path.lexists(pool):  # a site's first release: the whole pool in one rename
        os.rename(staging, pool)
        sync_folder(pool.parent)
        return
    for h in hashes:
        target = pool / h
        if os.path.lexists(target):
            continue  # named already (the same listing, so the same content)
        os.rename(staging / h, target)
    sync_folder(pool)


def reachable(releases: Iterable[Path], pool: Path) -> set[str]:
    """The ``<h>`` of every pool folder one of ``releases`` reaches, through any depth.

    Read from the symlinks on disk: a symlink whose last part is a pool name counts,
    whatever else it says (counting too much keeps a folder; too little deletes one
    in use). A release's real subfolders (a release made before the pool) are read too.
    """
    seen: set[str] = set()
    stack = [str(r) for r in releases]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_symlink():
                h = os.path.basename(os.readlink(entry.path))
                if _NAME_RE.match(h) and h not in seen:
                    seen.add(h)
                    stack.append(os.path.join(pool, h))
            elif entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return seen


def prune(pool: Path, releases: Iterable[Path]) -> int:
    """Delete the pool folders none of ``releases`` reaches; returns how many.

    ``releases`` must be every release folder on disk: a folder any of them reaches stays.
    """
    try:
        names = os.listdir(pool)
    except FileNotFoundError:
        return 0
    for leftover in names:  # an earlier prune stopped while deleting
        if leftover.startswith(_GONE):
            shutil.rmtree(pool / leftover, ignore_errors=True)
    used = reachable(releases, pool)
    removed = 0
    for h in names:
        if not _NAME_RE.match(h) or h in used:
            continue
        gone = pool / f"{_GONE}{h}"
        try:
            os.rename(pool / h, gone)  # unnamed first: a half-deleted folder has no pool name
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            continue
        shutil.rmtree(gone, ignore_errors=True)
        removed += 1
    return removed
