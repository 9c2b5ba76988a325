"""Purging the CDN's copies of what a publish changed (Cloudflare), within its limits.

``urls_to_purge`` turns a publication's diff into the absolute URLs a CDN caches; a
page ``posts/x/index.html`` is cached under ``/posts/x/`` and, because the
mirror also serves it by name, under ``/posts/x/index.html``. Unchanged files
are never purged, and an unchanged publication purges nothing. ``purge``
sends the URLs to ``POST /zones/{zone_id}/purge_cache``.

A purge runs after the new version is live, so it never raises for a failed
call: it returns a ``PurgeReport`` whose ``failures`` the caller logs. The
cached copies then expire on their own ``Cache-Control`` lifetime.

Cloudflare's limits (checked 2026 against developers.cloudflare.com):

- /cache/how-to/purge-cache: at most 100 URLs ("operations") per request on
  every plan; purge requests are rate limited per account with a token bucket
  (Free: 5 requests/minute, bucket 25; Pro: 5/s, bucket 25; Business: 10/s;
  Enterprise: 50/s). Purge by hostname and by prefix are on every plan.
  (Until mid 2020 the limit was 30 URLs per call; ``files_per_request`` can
  lower the batch size.)
- /fundamentals/api/reference/limits: 1,200 API requests per 5 minutes per
  token; a 429 carries ``Retry-After``, "the number of seconds, rounded up,
  until more capacity is available". Going over the global limit blocks every
  call for five minutes.
- /cache/how-to/purge-cache/purge_by_prefix: prefixes are written without a
  scheme, ``www.example.com/foo``.

So: batches of ``files_per_request`` URLs, ``min_interval`` seconds apart;
above ``max_urls`` URLs one request purges the site's hostname (or its path
prefix when the site lives under a path) instead. ``purge_everything`` is never
used: a zone may serve other tenants' sites. A 429 waits ``Retry-After``; a 5xx
or a network error waits 1, 2, 4 ... seconds (at most 30). Both stop after
``max_attempts`` attempts per request or ``max_wait`` seconds of waiting in
all; batches not sent by then are reported as failed. Other 4xx responses are
not retried.

The API token comes from the environment variable named by ``cdn.token_env``,
is held in a ``config.Secret`` and is scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from render.config import CdnConfig, HostConfig, Secret, SiteConfig
from render.errors import ConfigError
from render.paths import url_for_output
from render.publish.versions import Publication, PublishOutcome

if TYPE_CHECKING:  # requests loads when a purge is sent: most hosts have no CDN to purge
    import requests

Sleep = Callable[[float], None]

_TIMEOUT = (10.0, 30.0)  # connect, read
_MAX_BACKOFF = 30.0
_SAFE = "/!$&'()*+,;=:@-._~"


class PurgeMode(Enum):
    none = "none"  # nothing to purge, or no CDN: no request made
    files = "files"  # by URL, in batches
    hosts = "hosts"  # the site's whole hostname, one request
    prefixes = "prefixes"  # the site's path prefix, one request


@dataclass(frozen=True, kw_only=True)
class PurgeFailure:
    batch: int  # 0-based index of the batch
    items: tuple[str, ...]  # what that batch was to purge
    status: int | None  # the last HTTP status, None for a network error or a batch not sent
    attempts: int
    message: str


@dataclass(frozen=True, kw_only=True)
class PurgeReport:
    """What a purge planned, sent and got back. Never holds the token."""

    zone: str
    mode: PurgeMode
    urls: tuple[str, ...]  # the URLs planned
    targets: tuple[str, ...]  # what was sent: the URLs, or the one host or prefix
    batches: int
    requests: int  # HTTP attempts, retries included
    purged: int  # targets Cloudflare confirmed
    waited: float  # seconds spent sleeping (pacing and retries)
    failures: tuple[PurgeFailure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """One line for a log or the CLI."""
        if self.mode is PurgeMode.none and self.ok:
            return "cdn purge: nothing to purge"
        what = f"{len(self.urls)} URLs"
        if self.mode in (PurgeMode.hosts, PurgeMode.prefixes):
            by = "hostname" if self.mode is PurgeMode.hosts else "prefix"
            what += f" by {by} {', '.join(self.targets)}"
        text = f"cdn purge: {what} in {self.requests} request(s)"
        if self.failures:
            failed = sum(len(f.items) for f in self.failures)
            text += f"; {failed} not purged: {self.failures[0].message}"
        return text


def urls_to_purge(publication: Publication, *, base_url: str) -> list[str]:
    """The absolute URLs whose cached copies the publication made stale, in path order."""
    if publication.outcome is PublishOutcome.unchanged:
        return []
    base = base_url.rstrip("/")
    urls: list[str] = []
    seen: set[str] = set()
    for path in publication.diff.paths:
        pretty = url_for_output(path)
        for url_path in (pretty, "/" + path) if pretty.endswith("/") else (pretty,):
            url = base + quote(url_path, safe=_SAFE)
            if url not in seen:
                seen.add(url)
                urls.append(url)
    return urls


def token(config: CdnConfig, *, environ: Mapping[str, str] | None = None) -> Secret:
    """The API token from ``$<cdn.token_env>``; ``ConfigError`` naming the variable if unset."""
    env = os.environ if environ is None else environ
    value = env.get(config.token_env, "").strip()
    if not value:
        raise ConfigError(
            f"cdn.token_env: the environment variable {config.token_env} is not set or empty",
            hint=f"export {config.token_env} with a Cloudflare API token that has the "
            f"Zone / Cache Purge permission for zone {config.zone_id or '(cdn.zone_id)'}",
        )
    return Secret(value)


def purge(
    urls: Sequence[str],
    *,
    config: CdnConfig,
    session: requests.Session | None = None,
    sleep: Sleep = time.sleep,
    root: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> PurgeReport:
    """Purge ``urls`` from Cloudflare's cache; failures go into the report, never raised.

    ``root`` is the site's base URL, purged by hostname or prefix when there are
    more than ``config.max_urls`` URLs (without it, the URLs' common folder).
    """
    urls = tuple(dict.fromkeys(urls))
    empty = PurgeReport(
        zone=config.zone_id,
        mode=PurgeMode.none,
        urls=urls,
        targets=(),
        batches=0,
        requests=0,
        purged=0,
        waited=0.0,
        failures=(),
    )
    if config.kind != "cloudflare" or not urls:
        return empty
    if len(urls) > config.max_urls:
        mode, target = _wide_target(urls, root)
        targets: tuple[str, ...] = (target,)
        batches = [targets]
    else:
        mode, targets = PurgeMode.files, urls
        size = max(1, config.files_per_request)
        batches = [urls[i : i + size] for i in range(0, len(urls), size)]
    try:
        secret = token(config, environ=environ)
    except ConfigError as exc:
        message = f"{exc.message} ({exc.hint})"
        failures = tuple(
            PurgeFailure(batch=i, items=b, status=None, attempts=0, message=message)
            for i, b in enumerate(batches)
        )
        return PurgeReport(
            zone=config.zone_id,
            mode=mode,
            urls=urls,
            targets=targets,
            batches=len(batches),
            requests=0,
            purged=0,
            waited=0.0,
            failures=failures,
        )
    own = session is None
    import requests

    http = requests.Session() if session is None else session
    try:
        sender = _Sender(config=config, secret=secret, http=http, sleep=sleep, mode=mode)
        failures_list = [f for i, b in enumerate(batches) if (f := sender.send(i, b)) is not None]
    finally:
        if own:
            http.close()
    failures = tuple(failures_list)
    return PurgeReport(
        zone=config.zone_id,
        mode=mode,
        urls=urls,
        targets=targets,
        batches=len(batches),
        requests=sender.requests,
        waited=sender.waited,
        failures=failures,
        purged=len(targets) - sum(len(f.items) for f in failures),
    )


def purge_publication(
    publication: Publication,
    *,
    site: SiteConfig,
    host: HostConfig,
    session: requests.Session | None = None,
    sleep: Sleep = time.sleep,
    environ: Mapping[str, str] | None = None,
) -> PurgeReport | None:
    """Plan and purge what ``publication`` changed; ``None`` when ``[cdn] kind = "none"``."""
    if host.cdn.kind == "none":
        return None
    urls = urls_to_purge(publication, base_url=site.base_url)
    return purge(
        urls, config=host.cdn, session=session, sleep=sleep, root=site.base_url, environ=environ
    )


class _Sender:
    """Sends batches one by one: paced, retried, within one waiting budget."""

    def __init__(
        self,
        *,
        config: CdnConfig,
        secret: Secret,
        http: requests.Session,
        sleep: Sleep,
        mode: PurgeMode,
    ) -> None:
        self.config = config
        self.secret = secret
        self.http = http
        self.sleep = sleep
        self.mode = mode
        self.url = f"{config.api_url.rstrip('/')}/zones/{config.zone_id}/purge_cache"
        self.requests = 0
        self.waited = 0.0  # all sleeping
        self.retry_waited = 0.0  # the part that counts against max_wait
        self.last_sent: float | None = None
        self.exhausted: str | None = None

    def send(self, index: int, items: tuple[str, ...]) -> PurgeFailure | None:
        def failed(status: int | None, attempts: int, message: str) -> PurgeFailure:
            return PurgeFailure(
                batch=index,
                items=items,
                status=status,
                attempts=attempts,
                message=self._scrub(message),
            )

        if self.exhausted is not None:
            return failed(None, 0, f"not sent: {self.exhausted}")
        body: dict[str, Any] = {self.mode.value: list(items)}
        status: int | None = None
        message = ""
        import requests

        for attempt in range(1, self.config.max_attempts + 1):
            self._pace()
            self.requests += 1
            self.last_sent = time.monotonic()
            try:
                response = self.http.post(
                    self.url,
                    json=body,
                    timeout=_TIMEOUT,
                    headers={"Authorization": f"Bearer {self.secret.reveal()}"},
                )
            except requests.RequestException as exc:
                status, message = None, f"network error: {type(exc).__name__}: {exc}"
                delay: float | None = _backoff(attempt)
            else:
                status = response.status_code
                errors = _errors(response)
                if status < 300 and not errors:
                    return None
                message = f"HTTP {status}: {errors or response.reason or 'no reason given'}"
                if status == 429:
                    delay = _retry_after(response.headers.get("Retry-After"), attempt)
                elif status >= 500:
                    delay = _backoff(attempt)
                else:
                    return failed(status, attempt, message + _hint(status, self.config))
            if attempt == self.config.max_attempts:
                message += f" (gave up after {attempt} attempts, cdn.max_attempts)"
                break
            assert delay is not None
            left = self.config.max_wait - self.retry_waited
            if delay > left:
                self.exhausted = (
                    f"{message}; a retry would wait {delay:g} s, more than the "
                    f"{max(left, 0):g} s left of cdn.max_wait"
                )
                return failed(status, attempt, self.exhausted)
            self._sleep(delay)
            self.retry_waited += delay
        return failed(status, self.config.max_attempts, message)

    def _pace(self) -> None:
        if self.last_sent is None or self.config.min_interval <= 0:
            return
        remaining = self.config.min_interval - (time.monotonic() - self.last_sent)
        if remaining > 0:
            self._sleep(remaining)

    def _sleep(self, seconds: float) -> None:
        self.sleep(seconds)
        self.waited += seconds

    def _scrub(self, text: str) -> str:
        value = self.secret.reveal()
        return text.replace(value, "**********") if value else text


def _wide_target(urls: Sequence[str], root: str | None) -> tuple[PurgeMode, str]:
    """The one hostname or prefix that covers the whole site (or the URLs' common folder)."""
    if root is not None:
        parts = urlsplit(root)
        path = parts.path.rstrip("/")
    else:
        parts = urlsplit(urls[0])
        split = [urlsplit(u).path.split("/")[:-1] for u in urls]
        common: list[str] = []
        for segments in zip(*split, strict=False):
            if len(set(segments)) > 1:
                break
            common.append(segments[0])
        path = "/".join(common).rstrip("/")
    if not path:
        return PurgeMode.hosts, parts.hostname or parts.netloc
    return PurgeMode.prefixes, f"{parts.netloc}{path}"


def _errors(response: requests.Response) -> str:
    """Cloudflare's ``errors`` (``success: false``) as one line; '' when it succeeded."""
    try:
        data = response.json()
    except ValueError:
        return "" if response.status_code < 300 else response.text[:200].strip()
    if not isinstance(data, dict):
        return ""
    errors = data.get("errors") or []
    if data.get("success", True) and not errors:
        return ""
    texts = [
        f"{e.get('message', e)} (code {e.get('code', '?')})" if isinstance(e, dict) else str(e)
        for e in errors
    ]
    return "; ".join(texts) or "success: false"


def _hint(status: int, config: CdnConfig) -> str:
    if status in (401, 403):
        return (
            f"; check that ${config.token_env} holds a token with the Zone / Cache Purge "
            f"permission for zone {config.zone_id}"
        )
    if status == 404:
        return f"; check cdn.zone_id ({config.zone_id})"
    return ""


def _backoff(attempt: int) -> float:
    return float(min(_MAX_BACKOFF, 2 ** (attempt - 1)))


def _retry_after(value: str | None, attempt: int) -> float:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date); backoff without one."""
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    return _backoff(attempt)
