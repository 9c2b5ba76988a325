"""CDN purge: what a publish makes stale, and Cloudflare calls within its limits.

Cloudflare's API is played by ``responses`` (no request leaves the process:
an unregistered call fails); the publications come from real publishes into a
real local store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from responses.registries import OrderedRegistry

from render.build.tree import FileEntry, content_type, write_object
from render.config import CdnConfig, load_host, load_site
from render.errors import ConfigError
from render.publish.manifest import Diff
from render.publish.purge import PurgeMode, purge, purge_publication, token, urls_to_purge
from render.publish.store import LocalStore
from render.publish.versions import Publication, PublishOutcome, publish_tree

API = "https://cf.test/client/v4"
ZONE = "0123456789abcdef0123456789abcdef"
ENDPOINT = f"{API}/zones/{ZONE}/purge_cache"
TOKEN = "cf-TOKEN-9f8e7d6c5b4a"
ENV = {"CLOUDFLARE_API_TOKEN": TOKEN}
BASE = "https://blog.example.com"
OK = {"success": True, "errors": [], "messages": [], "result": {"id": ZONE}}


def cdn(**overrides: Any) -> CdnConfig:
    values: dict[str, Any] = {
        "kind": "cloudflare",
        "zone_id": ZONE,
        "api_url": API,
        "min_interval": 0.0,
        **overrides,
    }
    return CdnConfig(**values)


class Sleeps(list[float]):
    """The ``sleep`` seam: records what it was asked to wait, waits for nothing."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(registry=OrderedRegistry) as rsps:
        yield rsps


def sent(rsps: responses.RequestsMock) -> list[dict[str, Any]]:
    return [json.loads(call.request.body or b"{}") for call in rsps.calls]


class Site:
    """Publishes file sets of one site into a real local store."""

    def __init__(self, tmp_path: Path) -> None:
        self.objects = tmp_path / "objects"
        self.objects.mkdir()
        self.store = LocalStore(tmp_path / "store")

    def publish(self, files: dict[str, bytes]) -> Publication:
        entries = {
            path: FileEntry(
                hash=write_object(self.objects, data), size=len(data), type=content_type(path)
            )
            for path, data in files.items()
        }
        return publish_tree(
            entries,
            self.objects,
            owner="acme",
            name="blog",
            base_url=BASE,
            store=self.store,
            ledger=None,
        )


def site_files(**changes: bytes) -> dict[str, bytes]:
    files = {
        "index.html": b"<h1>home</h1>",
        "posts/a/index.html": b"<h1>a</h1>",
        "posts/b/index.html": b"<h1>b</h1>",
        "static/site.css": b"body{}",
        "sitemap.xml": b"<urlset>1</urlset>",
        "robots.txt": b"User-agent: *\n",
    }
    files.update({k.replace("__", "/").replace("_dot_", "."): v for k, v in changes.items()})
    return files


def publication(*paths: str, outcome: PublishOutcome = PublishOutcome.published) -> Publication:
    return Publication(
        site="acme/blog",
        outcome=outcome,
        version="v2",
        parent="v1",
        files=1,
        bytes=1,
        uploaded_blobs=0,
        uploaded_bytes=0,
        requests=0,
        seconds=0.0,
        store="test",
        diff=Diff(added=(), changed=tuple(sorted(paths)), removed=()),
    )


# --- plan ---------------------------------------------------------------------


def test_a_one_page_change_plans_exactly_that_pages_urls(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.publish(site_files())
    second = site.publish(site_files(posts__b__index_dot_html=b"<h1>b, edited</h1>"))
    assert urls_to_purge(second, base_url=BASE + "/") == [
        f"{BASE}/posts/b/",
        f"{BASE}/posts/b/index.html",
    ]


def test_the_sitemap_and_home_page_are_purged_when_they_changed(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.publish(site_files())
    second = site.publish(
        site_files(
            index_dot_html=b"<h1>home 2</h1>",
            posts__b__index_dot_html=b"<h1>b2</h1>",
            sitemap_dot_xml=b"<urlset>2</urlset>",
        )
    )
    assert urls_to_purge(second, base_url=BASE) == [
        f"{BASE}/",
        f"{BASE}/index.html",
        f"{BASE}/posts/b/",
        f"{BASE}/posts/b/index.html",
        f"{BASE}/sitemap.xml",
    ]


def test_added_and_removed_pages_are_purged_unchanged_ones_are_not(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.publish(site_files())
    files = site_files(posts__c__index_dot_html=b"<h1>c</h1>")
    del files["posts/a/index.html"]
    urls = urls_to_purge(site.publish(files), base_url=BASE)
    assert urls == [
        f"{BASE}/posts/a/",
        f"{BASE}/posts/a/index.html",
        f"{BASE}/posts/c/",
        f"{BASE}/posts/c/index.html",
    ]


def test_an_unchanged_publish_plans_nothing_and_calls_nothing(
    tmp_path: Path, api: responses.RequestsMock
) -> None:
    site = Site(tmp_path)
    site.publish(site_files())
    again = site.publish(site_files())
    assert again.outcome is PublishOutcome.unchanged
    assert urls_to_purge(again, base_url=BASE) == []
    report = purge([], config=cdn(), environ=ENV, sleep=Sleeps())
    assert (report.mode, report.requests, report.ok) == (PurgeMode.none, 0, True)
    assert len(api.calls) == 0


def test_urls_keep_the_sites_path_and_are_percent_encoded() -> None:
    pub = publication("café/index.html", "feed.xml")
    assert urls_to_purge(pub, base_url="https://example.com/blog/") == [
        "https://example.com/blog/caf%C3%A9/",
        "https://example.com/blog/caf%C3%A9/index.html",
        "https://example.com/blog/feed.xml",
    ]


# --- calls --------------------------------------------------------------------


def test_urls_go_in_batches_of_files_per_request_with_the_bearer_token(
    api: responses.RequestsMock,
) -> None:
    for _ in range(3):
        api.post(ENDPOINT, json=OK)
    urls = [f"{BASE}/p{i}/" for i in range(5)]
    sleeps = Sleeps()
    report = purge(
        urls, config=cdn(files_per_request=2, min_interval=0.5), environ=ENV, sleep=sleeps
    )
    assert sent(api) == [{"files": urls[0:2]}, {"files": urls[2:4]}, {"files": urls[4:]}]
    assert {c.request.headers["Authorization"] for c in api.calls} == {f"Bearer {TOKEN}"}
    assert (report.ok, report.batches, report.requests, report.purged) == (True, 3, 3, 5)
    assert len(sleeps) == 2 and all(0 < s <= 0.5 for s in sleeps)  # paced between requests


def test_exactly_files_per_request_urls_take_one_request(api: responses.RequestsMock) -> None:
    api.post(ENDPOINT, json=OK)
    urls = [f"{BASE}/p{i}/" for i in range(100)]
    report = purge(urls, config=cdn(), environ=ENV, sleep=Sleeps())
    assert sent(api) == [{"files": urls}]
    assert report.batches == 1


def test_more_than_max_urls_purges_the_sites_host_in_one_request(
    api: responses.RequestsMock,
) -> None:
    api.post(ENDPOINT, json=OK)
    urls = [f"{BASE}/p{i}/" for i in range(11)]
    report = purge(urls, config=cdn(max_urls=10), root=BASE, environ=ENV, sleep=Sleeps())
    assert sent(api) == [{"hosts": ["blog.example.com"]}]
    assert (report.mode, report.targets, report.purged) == (
        PurgeMode.hosts,
        ("blog.example.com",),
        1,
    )


def test_a_site_under_a_path_is_purged_by_prefix_not_by_host(api: responses.RequestsMock) -> None:
    api.post(ENDPOINT, json=OK)
    urls = [f"https://example.com/blog/p{i}/" for i in range(3)]
    report = purge(
        urls, config=cdn(max_urls=2), root="https://example.com/blog", environ=ENV, sleep=Sleeps()
    )
    assert sent(api) == [{"prefixes": ["example.com/blog"]}]
    assert report.mode is PurgeMode.prefixes and report.ok


def test_a_429_is_retried_after_its_retry_after(api: responses.RequestsMock) -> None:
    api.post(
        ENDPOINT,
        status=429,
        headers={"Retry-After": "7"},
        json={"success": False, "errors": [{"code": 971, "message": "rate limited"}]},
    )
    api.post(ENDPOINT, json=OK)
    sleeps = Sleeps()
    report = purge([f"{BASE}/"], config=cdn(), environ=ENV, sleep=sleeps)
    assert sleeps == [7.0]
    assert (report.ok, report.requests, report.waited) == (True, 2, 7.0)


def test_a_5xx_is_retried_with_backoff(api: responses.RequestsMock) -> None:
    api.post(ENDPOINT, status=503, body="upstream unavailable")
    api.post(ENDPOINT, status=502, body="bad gateway")
    api.post(ENDPOINT, json=OK)
    sleeps = Sleeps()
    report = purge([f"{BASE}/"], config=cdn(), environ=ENV, sleep=sleeps)
    assert sleeps == [1.0, 2.0]
    assert (report.ok, report.requests) == (True, 3)


def test_persistent_failure_is_reported_not_raised(api: responses.RequestsMock) -> None:
    for _ in range(3):
        api.post(
            ENDPOINT,
            status=500,
            json={"success": False, "errors": [{"code": 10000, "message": "internal"}]},
        )
    api.post(ENDPOINT, json=OK)  # the second batch still goes out
    urls = [f"{BASE}/a/", f"{BASE}/b/"]
    report = purge(
        urls, config=cdn(files_per_request=1, max_attempts=3), environ=ENV, sleep=Sleeps()
    )
    assert not report.ok
    (failure,) = report.failures
    assert (failure.batch, failure.items, failure.status, failure.attempts) == (
        0,
        (f"{BASE}/a/",),
        500,
        3,
    )
    assert (
        failure.message
        == "HTTP 500: internal (code 10000) (gave up after 3 attempts, cdn.max_attempts)"
    )
    assert (report.requests, report.purged) == (4, 1)
    assert "1 not purged: HTTP 500: internal" in report.summary()


def test_a_retry_after_beyond_max_wait_stops_without_waiting(api: responses.RequestsMock) -> None:
    api.post(ENDPOINT, status=429, headers={"Retry-After": "300"}, json={"success": False})
    sleeps = Sleeps()
    urls = [f"{BASE}/a/", f"{BASE}/b/"]
    report = purge(urls, config=cdn(files_per_request=1, max_wait=60), environ=ENV, sleep=sleeps)
    assert sleeps == [] and len(api.calls) == 1  # the second batch is not sent into the block
    assert [f.batch for f in report.failures] == [0, 1]
    assert (
        "a retry would wait 300 s, more than the 60 s left of cdn.max_wait"
        in report.failures[0].message
    )
    assert report.failures[1].message.startswith("not sent: HTTP 429")


def test_a_refused_token_is_not_retried_and_says_what_to_check(api: responses.RequestsMock) -> None:
    api.post(
        ENDPOINT,
        status=403,
        json={"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]},
    )
    report = purge([f"{BASE}/"], config=cdn(), environ=ENV, sleep=Sleeps())
    assert len(api.calls) == 1
    assert report.failures[0].message == (
        "HTTP 403: Authentication error (code 10000); check that $CLOUDFLARE_API_TOKEN holds a "
        f"token with the Zone / Cache Purge permission for zone {ZONE}"
    )


def test_the_token_never_shows_in_messages_reprs_or_reports(api: responses.RequestsMock) -> None:
    def echo(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        auth = request.headers["Authorization"]
        return 400, {}, json.dumps({"success": False, "errors": [{"code": 1, "message": auth}]})

    api.post(ENDPOINT, body=requests.ConnectionError(f"connection reset (token {TOKEN})"))
    api.add_callback(responses.POST, ENDPOINT, callback=echo)
    report = purge([f"{BASE}/"], config=cdn(), environ=ENV, sleep=Sleeps())
    assert report.requests == 2 and not report.ok
    assert "Bearer **********" in report.failures[0].message
    texts = [
        repr(report),
        str(report),
        report.summary(),
        repr(token(cdn(), environ=ENV)),
        str(token(cdn(), environ=ENV)),
    ]
    assert all(TOKEN not in text for text in texts)


def test_a_missing_token_variable_is_named_and_nothing_is_sent(
    api: responses.RequestsMock,
) -> None:
    config = cdn(token_env="ACME_CF_TOKEN")
    report = purge([f"{BASE}/"], config=config, environ={}, sleep=Sleeps())
    assert len(api.calls) == 0 and report.requests == 0
    assert report.failures[0].message.startswith(
        "cdn.token_env: the environment variable ACME_CF_TOKEN is not set or empty (export ACME_CF_TOKEN"
    )
    with pytest.raises(ConfigError, match="ACME_CF_TOKEN is not set") as exc:
        token(config, environ={"ACME_CF_TOKEN": "  "})
    assert "ACME_CF_TOKEN" in (exc.value.hint or "")


# --- from the publication, with the real config files --------------------------


def write_host(tmp_path: Path, cdn_table: str) -> Path:
    (tmp_path / "render.toml").write_text(cdn_table)
    folder = tmp_path / "sites" / "acme" / "blog"
    folder.mkdir(parents=True)
    (folder / "site.toml").write_text(f'[site]\nbase_url = "{BASE}/"\n')
    return folder


def test_kind_none_makes_no_call(tmp_path: Path, api: responses.RequestsMock) -> None:
    folder = write_host(tmp_path, '[cdn]\nkind = "none"\n')
    host = load_host(tmp_path / "render.toml")
    site = load_site(folder, host=host)
    pub = publication("posts/a/index.html")
    assert purge_publication(pub, site=site, host=host, environ=ENV, sleep=Sleeps()) is None
    report = purge(urls_to_purge(pub, base_url=BASE), config=host.cdn, environ=ENV, sleep=Sleeps())
    assert report.requests == 0
    assert len(api.calls) == 0


def test_purge_publication_purges_the_changed_pages(
    tmp_path: Path, api: responses.RequestsMock
) -> None:
    folder = write_host(
        tmp_path, f'[cdn]\nkind = "cloudflare"\nzone_id = "{ZONE}"\napi_url = "{API}"\n'
    )
    host = load_host(tmp_path / "render.toml")
    site = load_site(folder, host=host)
    api.post(ENDPOINT, json=OK)
    report = purge_publication(
        publication("posts/a/index.html"), site=site, host=host, environ=ENV, sleep=Sleeps()
    )
    assert report is not None and report.ok
    assert sent(api) == [{"files": [f"{BASE}/posts/a/", f"{BASE}/posts/a/index.html"]}]
    assert report.summary() == "cdn purge: 2 URLs in 1 request(s)"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('kind = "cloudflare"', "render.toml: cdn.zone_id: required when cdn.kind = 'cloudflare'"),
        (
            "files_per_request = 500",
            "render.toml: cdn.files_per_request: must be between 1 and 100, got 500",
        ),
        ('api_url = "cf.test"', "render.toml: cdn.api_url: must be an http(s) URL, got 'cf.test'"),
    ],
)
def test_bad_cdn_config_is_refused_by_key(tmp_path: Path, table: str, problem: str) -> None:
    (tmp_path / "render.toml").write_text(f"[cdn]\n{table}\n")
    with pytest.raises(ConfigError) as exc:
        load_host(tmp_path / "render.toml")
    assert exc.value.problems == [problem]
