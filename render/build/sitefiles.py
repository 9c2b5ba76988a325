"""Reading a site's own files (``static/``, ``templates/``) without following a link out of it.

A tenant owns its site folder and can change it while a build reads it: swap
a folder for a symbolic link to ``/etc`` after it was listed, and a reader
that opens ``static/sub/passwd`` by name reads ``/etc/passwd``. So nothing
here opens a path by name from the top. A folder is opened once; everything
below it is opened relative to its parent's descriptor, one name at a time,
with ``O_NOFOLLOW``, and a file is checked to be a regular file on the very
descriptor that is then read (``fstat``). A link swapped in at any moment
makes that open fail; it is never followed.

Static files are published as they are, so a symbolic link under
``static/`` (or anything that is neither a folder nor a regular file) is an
error naming it. In ``templates/`` a link that stays inside the folder is
read as its target (templates are not published; the loader has always
allowed such links) and one that leaves it is not a template. Names
starting with a dot are skipped in both.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from render.errors import BuildError, PathError

CHUNK = 1 << 20  # files are hashed and copied a megabyte at a time, never read whole

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO does not block
_AGAIN = "run the build again"
_NO_LINKS = "replace the link with a copy of what it points to (render follows no links in {0}/)"


@dataclass(frozen=True, kw_only=True)
class SiteFile:
    """A regular file found under a site folder."""

    rel: str  # '/'-separated, as listed (a link's own name, not its target's)
    names: tuple[str, ...]  # the components of the path that is read, as they are on disk
    size: int
    mtime_ns: int

    @property
    def nfc(self) -> str:
        """The name a static file is published under: ``rel``, NFC-normalized."""
        return unicodedata.normalize("NFC", self.rel)


class SiteFolder:
    """One folder of a site, open for reading; everything below is read through its descriptor.

    ``path`` may itself be a link, as long as it leads to a folder inside
    ``inside`` (the site folder): ``site.toml`` allows that. It is resolved
    once, and the folders from ``inside`` down to it are opened without
    following links, so a link swapped in after the check is refused. A
    folder that does not exist (or is not a folder) has no files.
    """

    def __init__(self, path: Path, *, inside: Path, label: str) -> None:
        self.label = label  # how errors name the folder: "static"
        self.path = path
        self._fd: int | None = None
        real, top = Path(os.path.realpath(path)), Path(os.path.realpath(inside))
        self._real = real
        if not real.is_relative_to(top):
            raise self._out_of_site()
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for name in real.relative_to(top).parts:
            try:
                below = _open_below(fd, name, _DIR)
            except OSError as exc:
                mode = _lstat_mode(fd, name)
                os.close(fd)
                if mode is not None and stat.S_ISLNK(mode):  # swapped in since it was resolved
                    raise self._out_of_site() from None
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return  # no such folder: no files
                raise self._unreadable(f"{label}/", exc) from None
            os.close(fd)
            fd = below
        self._fd = fd

    def __enter__(self) -> SiteFolder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- listing -------------------------------------------------------------

    def files(self, *, links: bool = False) -> Iterator[SiteFile]:
        """Every regular file below, a folder at a time; lazily, so each folder is opened when reached.

        Without ``links`` a symbolic link, a FIFO, a socket or a device is an
        error naming it. With ``links`` (templates), a link to a regular file
        inside the folder is that file under the link's name, and anything
        else that is not a folder or a regular file is skipped.
        """
        if self._fd is None:
            return
        pending: list[tuple[str, ...]] = [()]
        while pending:
            names = pending.pop()
            found = self._list(names)
            subfolders = []
            for name, st in found:
                here = (*names, name)
                if stat.S_ISDIR(st.st_mode):
                    subfolders.append(here)
                elif stat.S_ISREG(st.st_mode):
                    yield self._file(here, here, st)
                elif links and stat.S_ISLNK(st.st_mode):
                    target = self._inside(here)
                    if target is not None:
                        yield target
                elif not links:
                    raise self._not_regular(here, st.st_mode)
            pending.extend(reversed(subfolders))

    def _list(self, names: tuple[str, ...]) -> list[tuple[str, os.stat_result]]:
        fd = self._open(names, directory=True)
        try:
            with os.scandir(fd) as entries:
                found = [
                    (e.name, e.stat(follow_symlinks=False))
                    for e in entries
                    if not e.name.startswith(".")
                ]
        finally:
            os.close(fd)
        return sorted(found, key=lambda item: item[0])

    def _file(
        self, names: tuple[str, ...], on_disk: tuple[str, ...], st: os.stat_result
    ) -> SiteFile:
        return SiteFile(
            rel="/".join(names), names=on_disk, size=st.st_size, mtime_ns=st.st_mtime_ns
        )

    def _inside(self, names: tuple[str, ...]) -> SiteFile | None:
        """The regular file a link inside the folder leads to, named as the link; None otherwise."""
        target = Path(os.path.realpath(self._real.joinpath(*names)))
        if not target.is_relative_to(self._real) or target == self._real:
            return None
        on_disk = target.relative_to(self._real).parts
        try:
            fd = self._open(on_disk, directory=False)
        except BuildError:
            return None  # it changed, or is not a file: not a template
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return self._file(names, on_disk, st) if stat.S_ISREG(st.st_mode) else None

    # --- reading -------------------------------------------------------------

    def open(self, names: tuple[str, ...]) -> int:
        """A descriptor of the file ``names`` (the caller closes it), checked to be a regular file."""
        fd = self._open(names, directory=False)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise self._not_regular(names, mode)
        return fd

    def hash(self, file: SiteFile, *, max_bytes: int | None) -> tuple[int, int, str]:
        """(size, mtime_ns, sha256) of ``file``, read in chunks; over ``max_bytes`` raises."""
        fd = self.open(file.names)
        try:
            st = os.fstat(fd)
            if max_bytes is not None and st.st_size > max_bytes:
                raise _TooLarge(st.st_size)
            digest = hashlib.sha256()
            size = 0
            for chunk in _chunks(fd, max_bytes=max_bytes):
                digest.update(chunk)
                size += len(chunk)
        except _TooLarge as exc:
            assert max_bytes is not None
            raise self.too_large(file.rel, exc.size, max_bytes) from None
        finally:
            os.close(fd)
        return size, st.st_mtime_ns, digest.hexdigest()

    def read_bytes(self, names: tuple[str, ...]) -> bytes:
        """The whole of a small file (a template)."""
        fd = self.open(names)
        try:
            return b"".join(_chunks(fd, max_bytes=None))
        finally:
            os.close(fd)

    # --- errors --------------------------------------------------------------

    def name(self, names: tuple[str, ...] | str) -> str:
        """How an error names a path under the folder: ``static/sub/a.css``."""
        return f"{self.label}/{names if isinstance(names, str) else '/'.join(names)}"

    def too_large(self, rel: str, size: int, limit: int) -> BuildError:
        return BuildError(
            f"{self.name(rel)} is {size:,} bytes, over the limit of {limit:,} bytes for one file",
            hint="make it smaller, or serve it from elsewhere "
            "(the host's limit: [limits] static_file_max_bytes in render.toml)",
        )

    def _out_of_site(self) -> BuildError:
        return BuildError(
            f"{self.label}/ is a symbolic link out of the site folder",
            hint=f"render reads only the site's own files; make {self.label}/ a folder inside the site",
        )

    def _unreadable(self, what: str, exc: OSError) -> BuildError:
        return BuildError(
            f"{what}: cannot read it ({exc.strerror})",
            hint="make it readable by the user render runs as",
        )

    def _not_regular(self, names: tuple[str, ...], mode: int) -> BuildError:
        if stat.S_ISLNK(mode):
            return BuildError(
                f"{self.name(names)} is a symbolic link; {self.label}/ holds only folders and regular files",
                hint=_NO_LINKS.format(self.label),
            )
        return BuildError(
            f"{self.name(names)} is not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special file')})",
            hint=f"remove it; {self.label}/ holds only folders and regular files",
        )

    def _open(self, names: tuple[str, ...], *, directory: bool) -> int:
        """Open ``names`` below the folder one component at a time, following no link."""
        if self._fd is None:
            raise BuildError(f"{self.label}/ changed while the build read it", hint=_AGAIN)
        fd = self._fd
        for i, name in enumerate(names):
            last = i == len(names) - 1
            try:
                below = _open_below(fd, name, _DIR if directory or not last else _FILE)
            except OSError as exc:
                here = names[: i + 1]
                mode = _lstat_mode(fd, name)
                if mode is not None and stat.S_ISLNK(mode):  # swapped in since it was listed
                    raise self._not_regular(here, mode) from None
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise BuildError(
                        f"{self.name(here)} changed while the build read it", hint=_AGAIN
                    ) from None
                raise self._unreadable(self.name(here), exc) from None
            finally:
                if fd != self._fd:
                    os.close(fd)
            fd = below
        return os.dup(fd) if fd == self._fd else fd


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def _chunks(fd: int, *, max_bytes: int | None) -> Iterator[bytes]:
    """The bytes of ``fd`` from where it is, a chunk at a time; more than ``max_bytes`` raises.

    The size a file has when it is opened is checked by the caller; this
    bounds a file that grows while it is read.
    """
    size = 0
    while chunk := os.read(fd, CHUNK):
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise _TooLarge(max(size, os.fstat(fd).st_size))
        yield chunk


def _open_below(fd: int, name: str, flags: int) -> int:
    return os.open(name, flags, dir_fd=fd)


def _lstat_mode(fd: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        return None


_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


# --- static files --------------------------------------------------------------


def static_files(folder: SiteFolder, *, file_max: int, site_max: int) -> list[SiteFile]:
    """Every file of a site's static folder, checked, sorted by the name it is published under.

    A name is published NFC-normalized (a file saved with decomposed accents
    on macOS is ``café.css`` like any other), so two names equal after NFC
    are an error naming both; so is a name that a URL or an object store
    cannot carry (not UTF-8, control characters, a backslash, leading or
    trailing spaces, or any of these after NFKC normalization, as for
    slugs). Sizes are checked from the listing, before anything is read.
    """
    files: dict[str, SiteFile] = {}
    total = 0
    for file in folder.files():
        for name in file.names:
            if (problem := name_problem(name)) is not None:
                raise PathError(
                    f"{folder.name(file.names)!a}: the name {name!a} {problem}",
                    hint="rename the file or folder",
                )
        other = files.get(file.nfc)
        if other is not None:
            first, second = sorted((other, file), key=lambda f: f.names)
            raise PathError(
                f"{folder.name(first.names)!a} and {folder.name(second.names)!a} are the same "
                f"name after Unicode normalization (NFC): {folder.name(file.nfc)}",
                hint="rename or remove one of them",
            )
        if file.size > file_max:
            raise folder.too_large(file.rel, file.size, file_max)
        total += file.size
        if total > site_max:
            raise BuildError(
                f"{folder.label}/ holds more than {site_max:,} bytes, the limit for one site's "
                f"static files ({total:,} bytes with {folder.name(file.rel)})",
                hint="remove large files from it, or serve them from elsewhere "
                "(the host's limit: [limits] static_site_max_bytes in render.toml)",
            )
        files[file.nfc] = file
    return [files[nfc] for nfc in sorted(files)]


def name_problem(name: str) -> str | None:
    """Why a file name cannot be published, or None (the rules of ``render.paths`` for slugs)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8"
    problem = _problem(name)
    if problem is None:
        problem = _problem(unicodedata.normalize("NFKC", name))
        if problem is not None:
            problem += " after Unicode normalization"
    return problem


def _problem(name: str) -> str | None:
    # A name from a folder listing holds no '/' or NUL and is never '' or '.', '..'
    # itself; a slug's "contains '..'" does not apply ('jquery..min.js' is a file).
    if name in (".", ".."):
        return f"is {name!r}"
    if "/" in name or "\\" in name:
        return "contains a slash"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "contains a control character"
    if name != name.strip():
        return "has leading or trailing whitespace"
    return None
