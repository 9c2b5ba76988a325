"""Route patterns and row values -> safe relative output paths.

Everything that turns data into a file name goes through here. A value from a
tenant's database is untrusted: it may hold ``..``, a slash, a NUL, control
characters, or characters that only become one of those after Unicode
normalization (full-width ``．．／`` is ``../`` under NFKC). Such a value is an
error naming the route and the row; it never becomes a path outside the build.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from render.errors import PathError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_COMPONENT_BYTES = 255
_FIX_ROW = "fix the row, or filter it out in the route's query"
# Plain ASCII segments need none of the Unicode checks (most slugs are these).
_PLAIN = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,254}\Z")
_URL_SAFE = "/:@!$&'()*+,;=-._~"
_QUOTED_ALREADY = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=._~-]*\Z")  # what quote() leaves alone


@dataclass(frozen=True, kw_only=True)
class RoutePattern:
    """A parsed route ``path`` such as ``/posts/{slug}/``."""

    raw: str
    placeholders: tuple[str, ...]

    @functools.cached_property
    def pieces(self) -> tuple[str, ...]:
        """Literal text and placeholder names, alternating: ``("/posts/", "slug", "/")``."""
        return tuple(_PLACEHOLDER.split(self.raw))

    @property
    def is_file(self) -> bool:
        """True when the pattern ends in a file name (``/feed.xml``)."""
        return is_file_url(self.raw)

    def fill(self, values: dict[str, object], *, where: str | Callable[[], str]) -> str:
        """Fill ``{column}`` from ``values`` and return the checked URL path.

        ``where`` names the route and row in errors (a callable is asked only then).
        """

        parts = list(self.pieces)
        for i in range(1, len(parts), 2):
            name = parts[i]
            if name not in values:
                raise PathError(
                    f"{_text(where)}: path {self.raw!r} uses {{{name}}} but the row has no column {name!r}",
                    hint=f"add {name!r} to the route's query, or change the path",
                )
            parts[i] = check_segment(values[name], where=where, column=name)
        url = "".join(parts)
        if len(url.encode("utf-8")) > _MAX_COMPONENT_BYTES:  # values and literal text together
            for part in url.split("/"):
                size = len(part.encode("utf-8"))
                if size > _MAX_COMPONENT_BYTES:
                    raise PathError(
                        f"{_text(where)}: path component {part[:32]!r}... of {self.raw!r} is {size} bytes; "
                        f"a path component may be at most {_MAX_COMPONENT_BYTES}",
                        hint="shorten the values, or filter long ones out in the route's query",
                    )
        return url


def parse_pattern(raw: str) -> RoutePattern:
    """Check a route path from ``site.toml``; raises ``ValueError`` with the reason."""
    if not raw.startswith("/"):
        raise ValueError(f"must start with '/', got {raw!r}")
    if "\\" in raw or "\x00" in raw or any(unicodedata.category(c) == "Cc" for c in raw):
        raise ValueError(f"contains a backslash or a control character: {raw!r}")
    literal = _PLACEHOLDER.sub("x", raw)
    if "{" in literal or "}" in literal:
        raise ValueError(f"has an unclosed or invalid {{placeholder}}: {raw!r}")
    for part in literal.split("/"):
        if part in (".", ".."):
            raise ValueError(f"contains {part!r}: {raw!r}")
        if len(part.encode("utf-8")) > _MAX_COMPONENT_BYTES:
            raise ValueError(f"has a component over {_MAX_COMPONENT_BYTES} bytes: {part[:32]!r}...")
    if "//" in raw:
        raise ValueError(f"contains an empty segment: {raw!r}")
    return RoutePattern(raw=raw, placeholders=tuple(_PLACEHOLDER.findall(raw)))


def _text(where: str | Callable[[], str]) -> str:
    return where if isinstance(where, str) else where()


def check_segment(value: object, *, where: str | Callable[[], str], column: str) -> str:
    """Return ``value`` as one safe, NFC-normalized path segment, or raise."""
    if value is None:
        raise PathError(
            f"{_text(where)}: column {column!r} is NULL; a path segment cannot be empty",
            hint=_FIX_ROW,
        )
    if isinstance(value, bytes):
        raise PathError(
            f"{_text(where)}: column {column!r} is a blob; a path segment must be text",
            hint=_FIX_ROW,
        )
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.match(text) and ".." not in text:
        return text
    problem = _segment_problem(text)
    if problem is None:
        problem = _segment_problem(unicodedata.normalize("NFKC", text))
        if problem is not None:
            problem += " after Unicode normalization"
    if problem is not None:
        raise PathError(
            f"{_text(where)}: column {column!r} value {text!r} {problem}",
            hint=_FIX_ROW,
        )
    text = unicodedata.normalize("NFC", text)
    if len(text.encode("utf-8")) > _MAX_COMPONENT_BYTES:
        raise PathError(
            f"{_text(where)}: column {column!r} value is {len(text.encode('utf-8'))} bytes; "
            f"a path component may be at most {_MAX_COMPONENT_BYTES}",
            hint=_FIX_ROW,
        )
    return text


def _segment_problem(text: str) -> str | None:
    if text == "":
        return "is empty"
    if text in (".", ".."):
        return f"is {text!r}"
    if ".." in text:
        return "contains '..'"
    if "/" in text or "\\" in text:
        return "contains a slash"
    if "\x00" in text:
        return "contains a NUL byte"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        return "contains a control character"
    if text != text.strip():
        return "has leading or trailing whitespace"
    return None


def is_file_url(url: str) -> bool:
    """``/feed.xml`` names a file; ``/posts/`` and ``/about`` name folders."""
    last = url.rsplit("/", 1)[-1]
    return "." in last


def normalize_url(url: str) -> str:
    """A page URL path with a trailing slash unless it names a file."""
    if not is_file_url(url) and not url.endswith("/"):
        url += "/"
    return url


def output_path(url: str) -> str:
    """The relative file a URL path writes: ``/posts/x/`` -> ``posts/x/index.html``."""
    url = normalize_url(url)
    rel = url.lstrip("/")
    if rel == "" or rel.endswith("/"):
        rel += "index.html"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PathError(f"unsafe output path {rel!r}")
    return unicodedata.normalize("NFC", rel)


def file_and_folder(paths: Sequence[str]) -> tuple[str, str] | None:
    """In sorted ``paths``, a path that is also a folder of another, and the first path inside it.

    A tree cannot hold both ``posts/index.html`` and ``posts/index.html/index.html``
    (a slug ``index.html``): no file system, and so no mirror, can. Sorted, the
    paths between ``a`` and ``a/x`` all begin with ``a``, so one pass over
    neighbours finds every such pair.
    """
    count = len(paths)
    for i in range(count - 1):
        path = paths[i]
        if not paths[i + 1].startswith(path):
            continue
        cut = len(path)
        for j in range(i + 1, count):
            other = paths[j]
            if not other.startswith(path):
                break
            if other[cut] == "/":
                return path, other
    return None


def file_and_folder_of(paths: Sequence[str], new: Iterable[str]) -> tuple[str, str] | None:
    """As ``file_and_folder``, for the pairs with one of ``new`` in them (all are in ``paths``)."""
    members = set(paths)
    for path in new:
        cut = path.rfind("/")
        while cut > 0:
            if path[:cut] in members:
                return path[:cut], path
            cut = path.rfind("/", 0, cut)
        i = bisect.bisect_left(paths, path + "/")
        if i < len(paths) and paths[i].startswith(path + "/"):
            return path, paths[i]
    return None


def quote_url(url: str) -> str:
    """Percent-encode a URL path for use in links (slashes kept)."""
    if _QUOTED_ALREADY.match(url):  # most paths: nothing to encode, and a regex is cheaper
        return url
    return quote(url, safe=_URL_SAFE)


def url_for_output(rel: str) -> str:
    """The URL path of a relative output file: ``a/index.html`` -> ``/a/``."""
    if rel == "index.html":
        return "/"
    if rel.endswith("/index.html"):
        return "/" + rel[: -len("index.html")]
    return "/" + rel
