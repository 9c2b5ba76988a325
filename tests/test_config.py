"""render.toml and site.toml: every problem in a file reported at once, naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from render.config import Secret, config_path, find_site, load_host, load_site
from render.errors import ConfigError, UsageError


def host_at(tmp_path: Path, text: str = "") -> Path:
    (tmp_path / "render.toml").write_text(text)
    (tmp_path / "sites").mkdir(exist_ok=True)
    return tmp_path / "render.toml"


def site_at(tmp_path: Path, text: str, owner: str = "acme", name: str = "blog") -> Path:
    folder = tmp_path / "sites" / owner / name
    folder.mkdir(parents=True)
    (folder / "site.toml").write_text(text)
    return folder


def test_defaults_when_the_host_file_is_empty(tmp_path: Path) -> None:
    host = load_host(host_at(tmp_path))
    assert host.sites_dir == tmp_path / "sites"
    assert host.store_path == tmp_path / ".render" / "store"
    assert host.mirror_path == tmp_path / ".render" / "mirror"
    assert host.store.kind == "local" and host.schedule.default == "0 3 * * *"


def test_every_problem_of_a_site_file_is_reported_at_once(tmp_path: Path) -> None:
    host = load_host(host_at(tmp_path))
    folder = site_at(
        tmp_path,
        """
[site]
base_url = "blog.example.com"
schedule = "0 3 * *"
timezone = "Mars/Olympus"
timezon = "UTC"

[[routes]]
path = "/posts/{slug}/"
template = "post.html"

[[routes]]
path = "/x/"
template = "x.html"
query = { sql = "select 1" }

[seo]
robots = "no"
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_site(folder, host=host)
    assert caught.value.site == "acme/blog"
    assert caught.value.problems == [
        "sites/acme/blog/site.toml: unknown key 'site.timezon' (did you mean 'timezone'?)",
        "sites/acme/blog/site.toml: routes[0].query: required: path '/posts/{slug}/' has placeholders",
        "sites/acme/blog/site.toml: routes[1].query: expected a string, got a table",
        "sites/acme/blog/site.toml: seo.robots: expected an array, got a string",
        "sites/acme/blog/site.toml: site.base_url: must be an absolute http(s) URL, got 'blog.example.com'",
        "sites/acme/blog/site.toml: site.schedule: expected 5 fields (minute hour day month weekday), got 4: '0 3 * *'",
        "sites/acme/blog/site.toml: site.timezone: unknown time zone 'Mars/Olympus'",
    ]


def test_unknown_top_level_table_suggests_the_closest(tmp_path: Path) -> None:
    host = load_host(host_at(tmp_path))
    folder = site_at(
        tmp_path, '[site]\nbase_url = "https://a.example"\n[lighthous]\nenabled = false\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_site(folder, host=host)
    assert caught.value.problems == [
        "sites/acme/blog/site.toml: unknown key 'lighthous' (did you mean 'lighthouse'?)"
    ]


def test_missing_base_url_and_bad_toml_name_the_file(tmp_path: Path) -> None:
    host = load_host(host_at(tmp_path))
    folder = site_at(tmp_path, "[site]\n")
    with pytest.raises(ConfigError) as caught:
        load_site(folder, host=host)
    assert caught.value.problems == [
        "sites/acme/blog/site.toml: missing required key 'site.base_url'"
    ]
    (folder / "site.toml").write_text('[site]\nbase_url = "https://a.example\n')
    with pytest.raises(ConfigError) as caught:
        load_site(folder, host=host)
    assert caught.value.problems[0].startswith("sites/acme/blog/site.toml: invalid TOML: ")
    assert "line 2" in caught.value.problems[0]


def test_site_paths_cannot_leave_the_site_folder(tmp_path: Path) -> None:
    host = load_host(host_at(tmp_path))
    folder = site_at(
        tmp_path,
        '[site]\nbase_url = "https://a.example"\ndatabase = "../../other/blog/site.db"\n'
        'templates = "/etc"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_site(folder, host=host)
    assert caught.value.problems == [
        "sites/acme/blog/site.toml: site.database: must stay inside the site folder, got '../../other/blog/site.db'",
        "sites/acme/blog/site.toml: site.templates: must stay inside the site folder, got '/etc'",
    ]


def test_host_file_problems(tmp_path: Path) -> None:
    path = host_at(
        tmp_path,
        '[store]\nkind = "ftp"\nconcurrency = "many"\n[schedule]\ndefault = "61 * * * *"\n[stor]\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_host(path)
    assert caught.value.problems == [
        "render.toml: store.concurrency: expected an integer, got a string",
        "render.toml: unknown key 'stor' (did you mean 'store'?)",
        "render.toml: store.kind: expected 'local' or 's3', got 'ftp'",
        "render.toml: schedule.default: minute field '61': '61' is out of range 0-59",
    ]
    assert caught.value.exit_code == 2


def test_config_path_from_option_then_environment_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path(None) == tmp_path / "render.toml"
    monkeypatch.setenv("RENDER_CONFIG", "/srv/host/render.toml")
    assert config_path(None) == Path("/srv/host/render.toml")
    assert config_path("other.toml") == tmp_path / "other.toml"


def test_site_names_resolve_by_owner_and_name_or_unique_name(tmp_path: Path) -> None:
    host = load_host(host_at(tmp_path))
    site_at(tmp_path, '[site]\nbase_url = "https://a.example"\n', "acme", "blog")
    site_at(tmp_path, '[site]\nbase_url = "https://b.example"\n', "zeta", "blog")
    site_at(tmp_path, '[site]\nbase_url = "https://c.example"\n', "acme", "shop")
    assert find_site(host, "shop") == tmp_path / "sites" / "acme" / "shop"
    assert find_site(host, "zeta/blog") == tmp_path / "sites" / "zeta" / "blog"
    with pytest.raises(UsageError) as caught:
        find_site(host, "blog")
    assert caught.value.message == "site name 'blog' is ambiguous: acme/blog, zeta/blog"
    with pytest.raises(UsageError):
        find_site(host, "acme/nope")


def test_secrets_never_show_in_a_repr() -> None:
    secret = Secret("s3cr3t-key")
    assert (
        "s3cr3t" not in repr(secret)
        and "s3cr3t" not in str(secret)
        and "s3cr3t" not in f"{[secret]}"
    )
    assert secret.reveal() == "s3cr3t-key"


def test_routes_cannot_write_into_render_own_folder(tmp_path: Path) -> None:
    host = load_host(host_at(tmp_path))
    folder = site_at(
        tmp_path,
        '[site]\nbase_url = "https://a.example"\n[[routes]]\npath = "/_render/x.json"\ntemplate = "x.json"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_site(folder, host=host)
    assert caught.value.problems == [
        "sites/acme/blog/site.toml: routes[0].path: /_render/ is reserved for render's own files"
    ]
