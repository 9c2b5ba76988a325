"""Who goes to the mirror and who goes to the app: the front proxy's decision, in Python.

``ovh/nginx/route.conf`` makes the same decision in nginx; a test sends the
same table of requests through both and checks they agree, and that the
crawler list here is the one in the nginx map.

The decision, in order:

1. A request that is not ``GET`` or ``HEAD`` goes to the app (the mirror is
   read-only: a login form's POST must reach the app).
2. A known crawler goes to the mirror.
3. A request carrying a non-empty session cookie goes to the app.
4. Everyone else, the logged-out visitor, goes to the mirror.

Why this is not cloaking: cloaking is showing search engines different
content from what people see. Here a crawler gets exactly the page a
logged-out person gets, from the same release of the same version; the user
agent only saves the cookie test for clients that never log in. A client that
fakes a crawler user agent gains nothing but the logged-out view it would get
anyway, and a logged-in person who happens to match a crawler token sees the
public page, never someone else's. The mirror and the store serve the same
version id, so crawlers and newcomers never see two versions of a site at once
for longer than one sync interval.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum

SESSION_COOKIE = "session"

# Lower-case substrings of the User-Agent of crawlers and link-preview fetchers.
# Specific names only: a bare "bot" would also match phones such as the Cubot.
CRAWLER_TOKENS: tuple[str, ...] = (
    "googlebot",
    "google-inspectiontool",
    "storebot-google",
    "adsbot-google",
    "mediapartners-google",
    "bingbot",
    "bingpreview",
    "msnbot",
    "duckduckbot",
    "yandexbot",
    "baiduspider",
    "slurp",
    "applebot",
    "petalbot",
    "seznambot",
    "qwantify",
    "sogou",
    "facebookexternalhit",
    "facebot",
    "twitterbot",
    "linkedinbot",
    "slackbot",
    "discordbot",
    "telegrambot",
    "whatsapp",
    "pinterestbot",
    "redditbot",
    "embedly",
    "ia_archiver",
    "archive.org_bot",
    "gptbot",
    "oai-searchbot",
    "chatgpt-user",
    "claudebot",
    "perplexitybot",
    "ccbot",
    "amazonbot",
    "bytespider",
    "ahrefsbot",
    "semrushbot",
)

_CRAWLER_RE = re.compile("|".join(re.escape(t) for t in CRAWLER_TOKENS), re.IGNORECASE)
_READ_METHODS = frozenset({"GET", "HEAD"})


class Target(Enum):
    mirror = "mirror"  # the static release on the mirror host
    app = "app"  # the dynamic application


def is_crawler(user_agent: str | None) -> bool:
    """True when the User-Agent names a known crawler or link-preview fetcher."""
    return bool(user_agent) and _CRAWLER_RE.search(user_agent or "") is not None


def route_request(
    *,
    user_agent: str | None,
    cookies: Mapping[str, str],
    cookie_name: str = SESSION_COOKIE,
    method: str = "GET",
) -> Target:
    """Where the front proxy sends a request: the mirror, or the app."""
    if method.upper() not in _READ_METHODS:
        return Target.app
    if is_crawler(user_agent):
        return Target.mirror
    if cookies.get(cookie_name):
        return Target.app
    return Target.mirror
