"""The one error family of render.

Library code raises these and never prints; ``render.cli`` is the single place
that catches a ``RenderError`` and shows it once. Anything that is not a
``RenderError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sqlite3


class RenderError(Exception):
    """An expected failure with a message a person can act on."""

    exit_code = 1
    stage: str | None = None

    def __init__(
        self,
        message: str,
        *,
        site: str | None = None,
        stage: str | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.site = site
        if stage is not None:
            self.stage = stage
        self.hint = hint
        self.detail = detail

    def with_site(self, site: str, *, hint: str | None = None) -> RenderError:
        """Return this error with the site (and a hint) filled in where missing."""
        if self.site is None:
            self.site = site
        if hint is not None and self.hint is None:
            self.hint = hint
        return self

    def headline(self) -> str:
        """``owner/name: stage: message``, the first line the CLI prints."""
        parts = [p for p in (self.site, self.stage) if p]
        parts.append(self.message)
        return ": ".join(parts)

    def __str__(self) -> str:
        return self.headline()


class UsageError(RenderError):
    """Bad command-line usage: an unknown site, a bad option value."""

    exit_code = 2
    stage = None


class ConfigError(RenderError):
    """``render.toml`` or a ``site.toml`` is missing, unreadable or invalid."""

    exit_code = 2
    stage = "config"

    def __init__(self, problems: list[str] | str, **kwargs: str | None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems), **kwargs)  # type: ignore[arg-type,unused-ignore]


class SnapshotError(RenderError):
    """The site database could not be copied."""

    stage = "snapshot"


class QueryError(RenderError):
    """A tenant query was refused, failed or ran past its time limit."""

    stage = "build"


class PathError(RenderError):
    """A route produced an output path that is unsafe or collides with another."""

    stage = "build"


class TemplateError(RenderError):
    """A tenant template failed to compile or render."""

    stage = "build"

    def __init__(
        self,
        message: str,
        *,
        template: str | None = None,
        line: int | None = None,
        source_line: str | None = None,
        **kwargs: str | None,
    ) -> None:
        self.template = template
        self.line = line
        self.source_line = source_line
        where = template or ""
        if template and line:
            where = f"templates/{template}, line {line}"
        elif template:
            where = f"templates/{template}"
        full = f"{where}: {message}" if where else message
        if source_line and "detail" not in kwargs:
            kwargs["detail"] = "    " + source_line.strip()
        super().__init__(full, **kwargs)  # type: ignore[arg-type,unused-ignore]


class BuildError(RenderError):
    """The build failed for a reason other than a template or a query."""

    stage = "build"


class CheckFailed(RenderError):
    """The checks (SEO lint, Lighthouse budgets) block this publish."""

    stage = "check"


class PublishError(RenderError):
    """The store refused, lost or corrupted part of a publish."""

    stage = "publish"


class ConflictError(PublishError):
    """Another publisher switched the root first; the winner stays live."""


class MirrorError(RenderError):
    """The mirror could not materialize or switch a release."""

    stage = "mirror"


class LockedError(RenderError):
    """Another process is building this site right now."""

    stage = "lock"


class BrokerError(RenderError):
    """The Celery broker (Redis) could not be reached, or a worker's task was lost."""

    stage = "queue"


NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""What a write fails with when the disk or a quota is full, or a file is past its size limit."""


class DiskFullError(RenderError):
    """A write found no room: the disk or a quota is full, or a file is past its size limit.

    The message says what was being written and why it failed; the hint where
    to make room, and (added by ``with_site``) that the live version is unchanged.
    """

    @classmethod
    def of(
        cls,
        exc: BaseException,
        *,
        writing: str,
        folder: object,
        stage: str | None,
        site: str | None = None,
    ) -> DiskFullError:
        """``exc`` (``is_disk_full``) as this error: ``writing <what>: <why>``."""
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            hint = (
                "a file grew past the largest size allowed here: raise the file-size limit"
                " (ulimit -f), or use another file system"
            )
        elif isinstance(exc, OSError) and exc.errno == errno.EDQUOT:
            hint = f"free space, or raise the disk quota, on the file system holding {folder}"
        else:
            hint = f"free space on the file system holding {folder}"
        return cls(f"writing {writing}: {why}", site=site, stage=stage, hint=hint)

    def with_site(self, site: str, *, hint: str | None = None) -> RenderError:
        """As ``RenderError.with_site``, but a hint (the live version's) follows this one's."""
        if self.site is None:
            self.site = site
        if hint is not None:
            self.hint = hint if self.hint is None else f"{self.hint}; {hint}"
        return self


def is_disk_full(exc: BaseException) -> bool:
    """True for a write that found no room: ``NO_ROOM``, or SQLite's full disk.

    SQLite says "database or disk is full" for ENOSPC while writing, and "disk
    I/O error" for a write of any other cause (a quota, a file-size limit) or
    for the shared-memory file of a WAL database it could not grow.
    """
    if isinstance(exc, OSError):
        return exc.errno in NO_ROOM
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) in _SQLITE_NO_ROOM
    return False


_SQLITE_NO_ROOM = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_SHMSIZE}
)


def written(exc: BaseException, default: object) -> str:
    """The file an ``OSError`` names, or ``default`` (``write()`` names none)."""
    filename = getattr(exc, "filename", None)
    return os.fsdecode(filename) if isinstance(filename, (str, bytes)) else str(default)
