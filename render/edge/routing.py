"""``edge/src/routing.js``: ``render.serve.routing``'s decision, written out for the Worker.

The Python module is the one source of truth; this writes its crawler list,
session cookie name and read methods into a JavaScript module with the same
decision, in the same order. ``render edge deploy`` writes it before deploying,
and a test checks the committed file is what this module writes and that the
Worker routes every case of ``tests/test_routing.py`` as ``route_request`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

from render.files import replace_atomically
from render.serve.routing import CRAWLER_TOKENS, SESSION_COOKIE

READ_METHODS = ("GET", "HEAD")

_TEMPLATE = """\
// Generated from render/serve/routing.py by render.edge.routing: do not edit.
// The front proxy's decision (render.serve.routing.route_request), for the edge Worker:
//   1. not GET/HEAD                 -> "app"    (the bucket is read-only)
//   2. a known crawler User-Agent   -> "mirror" (served from R2)
//   3. a non-empty session cookie   -> "app"    (a logged-in person: the origin)
//   4. anyone else (logged out)     -> "mirror"

export const SESSION_COOKIE = {cookie};
export const READ_METHODS = {methods};
export const CRAWLER_TOKENS = {tokens};

export function isCrawler(userAgent) {{
  if (!userAgent) return false;
  const agent = userAgent.toLowerCase();
  return CRAWLER_TOKENS.some((token) => agent.includes(token));
}}

/** The value of cookie `name` in a Cookie header, or "" (the first one, as Python's cookie jar reads it). */
export function cookieValue(header, name) {{
  if (!header) return "";
  for (const part of header.split(";")) {{
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim().replace(/^"(.*)"$/, "$1");
  }}
  return "";
}}

export function routeRequest(method, userAgent, cookieHeader, cookieName = SESSION_COOKIE) {{
  if (!READ_METHODS.includes(String(method).toUpperCase())) return "app";
  if (isCrawler(userAgent)) return "mirror";
  if (cookieValue(cookieHeader, cookieName || SESSION_COOKIE)) return "app";
  return "mirror";
}}
"""


def routing_js() -> str:
    """The text of ``edge/src/routing.js``."""
    tokens = "[\n" + "".join(f"  {json.dumps(t)},\n" for t in CRAWLER_TOKENS) + "]"
    return _TEMPLATE.format(
        cookie=json.dumps(SESSION_COOKIE), methods=json.dumps(list(READ_METHODS)), tokens=tokens
    )


def write_routing_js(edge: Path) -> Path:
    """Write ``<edge>/src/routing.js`` (when its text changed); its path."""
    target = edge / "src" / "routing.js"
    text = routing_js()
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        replace_atomically(target, text.encode())
    return target
