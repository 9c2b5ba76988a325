"""Reading a TOML config file into frozen dataclasses, every problem collected.

``render.config`` declares the sections (fields with a default, a one-line doc
and, for numbers, an allowed range); this module reads a file safely (a small,
regular, UTF-8 file only: a FIFO or a link named ``site.toml`` fails that site
alone), converts each value to its field's type, checks ranges, and collects
every problem as ``file: key: problem`` for one ``ConfigError``.
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import math
import os
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Any, TypeVar

from render.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a larger render.toml or site.toml is refused, not read

T = TypeVar("T")


class Problems:
    def __init__(self, file: Path, base: Path) -> None:
        try:
            self.name = str(file.relative_to(base))
        except ValueError:
            self.name = str(file)
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(
            f"{self.name}: {where}: {message}" if where else f"{self.name}: {message}"
        )


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _convert(value: object, hint: Any, where: str, problems: Problems) -> object:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.add(where, f"expected a boolean, got {type_name(value)}")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.add(where, f"expected an integer, got {type_name(value)}")
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            problems.add(where, f"expected a finite number, got {number_text(value)}")
            return None
        problems.add(where, f"expected a number, got {type_name(value)}")
    elif hint is str:
        if isinstance(value, str):
            return value
        problems.add(where, f"expected a string, got {type_name(value)}")
    elif origin is tuple:
        (item,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if not isinstance(value, list):
            problems.add(where, f"expected an array, got {type_name(value)}")
            return ()
        return tuple(_convert(v, item, f"{where}[{i}]", problems) for i, v in enumerate(value))
    elif origin is Mapping:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            problems.add(where, f"expected a table, got {type_name(value)}")
            return {}
        converted = {k: _convert(v, item, f"{where}.{k}", problems) for k, v in value.items()}
        return types.MappingProxyType({k: v for k, v in converted.items() if v is not None})
    elif isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return parse_table(value, hint, where, problems)
    else:  # pragma: no cover - a new field type without a converter is a bug
        raise TypeError(f"no converter for {hint!r}")
    return None


def number_text(value: float) -> str:
    """A number as TOML would write it: ``5``, ``0.25``, ``nan``, ``1e+308``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _check_range(value: object, f: Any, where: str, problems: Problems) -> None:
    """The one range check: every number field declares ``between`` next to it (``_f``)."""
    between = f.metadata.get("between")
    if between is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = between
    if not low <= value <= high:
        problems.add(
            where,
            f"must be between {number_text(low)} and {number_text(high)}, got {number_text(value)}",
        )


def parse_table(data: object, cls: type[T], where: str, problems: Problems) -> T:
    if not isinstance(data, dict):
        problems.add(where, f"expected a table, got {type_name(data)}")
        data = {}
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, object] = {}
    prefix = f"{where}." if where else ""
    for key, value in data.items():
        if key not in known or key == "index":
            close = difflib.get_close_matches(key, [k for k in known if k != "index"], n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            problems.add("", f"unknown key '{prefix}{key}'{suggestion}")
            continue
        converted = _convert(value, hints[key], f"{prefix}{key}", problems)
        if converted is not None:
            _check_range(converted, known[key], f"{prefix}{key}", problems)
            values[key] = converted
    for name, f in known.items():
        if f.metadata.get("required") and name not in values and name not in data:
            problems.add("", f"missing required key '{prefix}{name}'")
    try:
        return cls(**values)
    except TypeError:
        # required keys missing (already reported): build with placeholders
        for name, f in known.items():
            if name not in values and f.default is MISSING and f.default_factory is MISSING:
                values[name] = ""
        return cls(**values)


class _Unreadable(Exception):
    """A config file that is not a small regular file (the message says what it is)."""


def _read_regular(path: Path, *, follow_links: bool) -> bytes:
    """The bytes of a regular file of at most ``MAX_CONFIG_BYTES``; never blocks.

    ``O_NONBLOCK`` makes opening a FIFO return at once (and ``fstat`` then
    refuses it); ``O_NOFOLLOW`` refuses a symbolic link where the file must be
    the tenant's own.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise _Unreadable("is a symbolic link; it must be a regular file") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _Unreadable(f"is {_file_kind(mode)}, not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise _Unreadable(f"is larger than {MAX_CONFIG_BYTES >> 10} KiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a device or socket"


def _not_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    at = exc.start
    line = data.count(b"\n", 0, at) + 1
    column = at - (data.rfind(b"\n", 0, at) + 1) + 1
    return (
        f"line {line}, column {column}: byte 0x{data[at]:02x} (offset {at}) is not UTF-8;"
        " save the file as UTF-8"
    )


def read_toml(
    path: Path,
    base: Path,
    error_cls: type[ConfigError] = ConfigError,
    *,
    follow_links: bool = True,
) -> tuple[dict[str, Any], str]:
    """The parsed file and the sha256 of its bytes; one ``error_cls`` when it cannot be read."""
    problems = Problems(path, base)
    data = b""
    try:
        data = _read_regular(path, follow_links=follow_links)
        return tomllib.loads(data.decode("utf-8")), hashlib.sha256(data).hexdigest()
    except FileNotFoundError:
        problems.add("", "file not found")
    except _Unreadable as exc:
        problems.add("", str(exc))
    except UnicodeDecodeError as exc:
        problems.add("", _not_utf8(data, exc))
    except tomllib.TOMLDecodeError as exc:
        problems.add("", f"invalid TOML: {exc}")
    except OSError as exc:
        problems.add("", f"cannot read: {exc.strerror}")
    raise error_cls(problems.items)


def pop_table(data: dict[str, Any], key: str) -> Any:
    return data.pop(key, {})


# --- fields ------------------------------------------------------------------


def setting(default: Any, doc: str, *, between: tuple[float, float] | None = None) -> Any:
    """A config field with its default and its one-line documentation.

    A number (int or float) also declares ``between=(lowest, highest)``, both
    allowed; the loader reports a value outside it, and any float that is not
    finite, as a problem of the file (a test checks every number has a range).
    """
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples and mappings for config defaults")
    metadata: dict[str, object] = {"doc": doc}
    if between is not None:
        low, high = between
        if not low <= default <= high:
            raise ValueError(f"default {default!r} is outside {between}")
        metadata["between"] = between
    return field(default=default, metadata=metadata)


def required(doc: str) -> Any:
    return field(metadata={"doc": doc, "required": True})


def field_docs(cls: type) -> dict[str, str]:
    """``{key: doc}`` for a config section, a number's range appended: the README table's text."""
    docs = {}
    for f in fields(cls):
        if "doc" not in f.metadata or f.name == "index":
            continue
        doc = f.metadata["doc"]
        if (between := f.metadata.get("between")) is not None:
            doc += f" ({number_text(between[0])} to {number_text(between[1])})"
        docs[f.name] = doc
    return docs
