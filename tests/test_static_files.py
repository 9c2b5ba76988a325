"""A site's static files are read safely: no link out of the site, bounded sizes, NFC names.

A tenant can change its site folder while a build reads it. The races are
made deterministic without sleeps: the site's config is loaded (and checked)
before a folder is swapped for a link, a scan is taken before a swap and the
build given that scan, or the walker (a lazy iterator) is paused between two
folders. What is outside the site is a file of the test's own under
``tmp_path`` standing for /etc/passwd; no build may publish its bytes.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from jinja2 import TemplateNotFound
from sitekit import Host, SiteSpec, changes, html, listing, make_host

from render import builder
from render.build import snapshot
from render.build.objects import Objects, sha256
from render.build.record import Previous
from render.build.sandbox import SiteLoader, make_environment
from render.build.sitefiles import SiteFolder
from render.build.sources import scan_sources
from render.config import ConfigError, load_host
from render.errors import BuildError
from render.pipeline import Options, run_site

SECRET = b"root:x:0:0:TOP-SECRET-4111:/root:/bin/bash\n"
OWN = b"tenant's own file\n"
LINK_HINT = (
    "Hint: replace the link with a copy of what it points to (render follows no links in static/)\n"
)


def _host(tmp_path: Path, static: dict[str, str | bytes], **limits: int) -> Host:
    host = make_host(tmp_path, sites={"acme/blog": SiteSpec(static=static)}, limits=limits or None)
    outside = tmp_path / "etc"  # stands for /etc: outside the site, not the tenant's
    outside.mkdir()
    (outside / "passwd").write_bytes(SECRET)
    return host


def _published_nowhere(host: Host) -> None:
    """No file the tool wrote (its state: objects, store, mirror) holds the secret bytes."""
    for dirpath, _dirs, files in os.walk(host.state_dir):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                assert SECRET not in path.read_bytes(), path


def _build(host: Host, tmp_path: Path) -> tuple[int, str]:
    before = listing(tmp_path, skip=[host.state_dir])
    result = host.cli("build", "acme/blog")
    assert changes(before, listing(tmp_path, skip=[host.state_dir])) == []
    return result.exit_code, result.stderr


def _error(message: str, hint: str) -> str:
    return f"Error: acme/blog: build: {message}\n{hint}"


# --- item 2: links and races -------------------------------------------------------


def test_a_static_folder_swapped_for_a_link_after_the_config_check_is_never_read(
    tmp_path: Path,
) -> None:
    host = _host(tmp_path, {"sub/passwd": OWN})
    site = host.site("acme/blog")  # site.toml checked: static/ is a folder inside the site
    static = host.site_dir("acme/blog") / "static"
    static.rename(static.with_name("static.old"))
    os.symlink(tmp_path / "etc", static)
    with pytest.raises(BuildError) as caught:
        run_site(site, host=host.config, reason="test", options=Options(force=True))
    assert caught.value.headline() == (
        "acme/blog: build: static/ is a symbolic link out of the site folder"
    )
    assert caught.value.hint == (
        "render reads only the site's own files; make static/ a folder inside the site"
    )
    _published_nowhere(host)


def test_a_folder_swapped_for_a_link_between_the_scan_and_the_copy_is_not_followed(
    tmp_path: Path,
) -> None:
    host = _host(tmp_path, {"sub/passwd": OWN})
    config, site = host.config, host.site("acme/blog")
    sources = scan_sources(site, Previous(), limits=config.limits)
    sub = host.site_dir("acme/blog") / "static" / "sub"
    sub.rename(sub.with_name("sub.old"))
    os.symlink(tmp_path / "etc", sub)  # same file name, the secret's bytes
    into = config.state_dir / "snapshots" / "acme" / "blog"
    with snapshot.take(site, into=into) as snap, pytest.raises(BuildError) as caught:
        builder.build(site, snap, host=config, sources=sources)
    assert caught.value.message == (
        "static/sub is a symbolic link; static/ holds only folders and regular files"
    )
    _published_nowhere(host)


def test_a_folder_swapped_for_a_link_while_the_walk_is_under_way_is_not_followed(
    tmp_path: Path,
) -> None:
    host = _host(tmp_path, {"a.txt": OWN, "sub/passwd": OWN})
    root = host.site_dir("acme/blog")
    with SiteFolder(root / "static", inside=root, label="static") as folder:
        walk = folder.files()
        assert next(walk).rel == "a.txt"  # static/ is listed; sub/ is not opened yet
        (root / "static/sub").rename(root / "static/sub.old")
        os.symlink(tmp_path / "etc", root / "static/sub")
        with pytest.raises(BuildError) as caught:
            next(walk)
    assert caught.value.message == (
        "static/sub is a symbolic link; static/ holds only folders and regular files"
    )


def test_a_file_swapped_for_a_fifo_after_it_was_listed_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    host = _host(tmp_path, {"a.txt": OWN})
    root = host.site_dir("acme/blog")
    with SiteFolder(root / "static", inside=root, label="static") as folder:
        [found] = list(folder.files())
        (root / "static/a.txt").unlink()
        os.mkfifo(root / "static/a.txt")
        with pytest.raises(BuildError) as caught:
            folder.hash(found, max_bytes=100)
    assert caught.value.message == "static/a.txt is not a regular file (a FIFO)"


@pytest.mark.parametrize(
    ("make", "message", "hint"),
    [
        pytest.param(
            lambda static, outside: os.symlink("real.css", static / "site.css"),
            "static/site.css is a symbolic link; static/ holds only folders and regular files",
            LINK_HINT,
            id="a-link-inside-the-site",
        ),
        pytest.param(
            lambda static, outside: os.symlink(outside / "passwd", static / "passwd"),
            "static/passwd is a symbolic link; static/ holds only folders and regular files",
            LINK_HINT,
            id="a-link-out-of-the-site",
        ),
        pytest.param(
            lambda static, outside: os.symlink(outside, static / "etc"),
            "static/etc is a symbolic link; static/ holds only folders and regular files",
            LINK_HINT,
            id="a-link-to-a-folder",
        ),
        pytest.param(
            lambda static, outside: os.mkfifo(static / "pipe"),
            "static/pipe is not a regular file (a FIFO)",
            "Hint: remove it; static/ holds only folders and regular files\n",
            id="a-fifo",
        ),
    ],
)
def test_anything_but_folders_and_regular_files_in_static_is_an_error_naming_it(
    tmp_path: Path, make: object, message: str, hint: str
) -> None:
    host = _host(tmp_path, {"real.css": "body{}"})
    make(host.site_dir("acme/blog") / "static", tmp_path / "etc")  # type: ignore[operator]
    code, stderr = _build(host, tmp_path)
    assert stderr == _error(message, hint)
    assert code == 1
    _published_nowhere(host)


def test_a_static_folder_that_is_a_link_inside_the_site_is_still_read(tmp_path: Path) -> None:
    # site.toml allows `static` to lead anywhere inside the site folder
    host = _host(tmp_path, {})
    public = host.site_dir("acme/blog") / "public"
    public.mkdir()
    (public / "site.css").write_bytes(b"body{}")
    os.symlink("public", host.site_dir("acme/blog") / "static")
    build = host.build("acme/blog")
    assert build.files["site.css"].hash == sha256(b"body{}")


def test_a_templates_folder_swapped_for_a_link_after_the_loader_resolved_a_name_is_not_followed(
    tmp_path: Path,
) -> None:
    templates = tmp_path / "templates"
    (templates / "sub").mkdir(parents=True)
    (templates / "sub" / "passwd").write_text("own")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_bytes(SECRET)

    class SwapAfterResolving(SiteLoader):
        def resolve(self, template: str) -> Path:
            path = super().resolve(template)  # inside the folder, a regular file
            (templates / "sub").rename(templates / "sub.old")
            os.symlink(tmp_path / "etc", templates / "sub")
            return path

    env = make_environment(templates)
    with pytest.raises(TemplateNotFound):
        SwapAfterResolving(templates).get_source(env, "sub/passwd")


# --- item 6: sizes ---------------------------------------------------------------------

FILE_HINT = (
    "Hint: make it smaller, or serve it from elsewhere "
    "(the host's limit: [limits] static_file_max_bytes in render.toml)\n"
)


@pytest.mark.parametrize(
    ("limits", "size", "message"),
    [
        pytest.param(
            {"static_file_max_bytes": 1000},
            1_000_001,
            "static/big.bin is 1,000,001 bytes, over the limit of 1,000 bytes for one file",
            id="over-a-small-limit",
        ),
        pytest.param(
            {},
            2 << 30,
            "static/big.bin is 2,147,483,648 bytes, over the limit of 100,000,000 bytes for one file",
            id="2-GB-over-the-default",
        ),
    ],
)
def test_a_static_file_over_the_limit_fails_before_it_is_read(
    tmp_path: Path, limits: dict[str, int], size: int, message: str
) -> None:
    host = _host(tmp_path, {"big.bin": b""}, **limits)
    os.truncate(host.site_dir("acme/blog") / "static/big.bin", size)  # sparse: no disk used
    code, stderr = _build(host, tmp_path)
    assert stderr == _error(message, FILE_HINT)
    assert code == 1
    assert sum(f.stat().st_size for f in host.state_dir.rglob("*") if f.is_file()) < 1 << 20


def test_a_sites_static_files_over_the_site_limit_fail_naming_the_file_that_crossed_it(
    tmp_path: Path,
) -> None:
    host = _host(tmp_path, {"a.bin": b"a" * 600, "b.bin": b"b" * 600}, static_site_max_bytes=1000)
    code, stderr = _build(host, tmp_path)
    assert stderr == _error(
        "static/ holds more than 1,000 bytes, the limit for one site's static files "
        "(1,200 bytes with static/b.bin)",
        "Hint: remove large files from it, or serve them from elsewhere "
        "(the host's limit: [limits] static_site_max_bytes in render.toml)\n",
    )
    assert code == 1


def test_files_within_the_limits_are_published_as_they_are(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # more than one chunk of the copy
    host = _host(tmp_path, {"a.bin": data}, static_file_max_bytes=3 << 20)
    build = host.build("acme/blog")
    assert build.files["a.bin"].size == len(data)
    assert build.blobs.read(build.files["a.bin"].hash) == data


@pytest.mark.parametrize(
    ("key", "upper"), [("static_file_max_bytes", 10**12), ("static_site_max_bytes", 10**13)]
)
def test_static_limits_below_one_are_config_errors(tmp_path: Path, key: str, upper: int) -> None:
    (tmp_path / "render.toml").write_text(f"[limits]\n{key} = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_host(tmp_path / "render.toml")
    assert caught.value.problems == [
        f"render.toml: limits.{key}: must be between 1 and {upper}, got 0"
    ]


def test_a_file_that_grows_after_the_scan_is_not_copied_past_its_scanned_size(
    tmp_path: Path,
) -> None:
    objects = tmp_path / "objects"
    objects.mkdir()
    source = tmp_path / "grown.bin"
    source.write_bytes(b"x" * 10 + b"y" * (5 << 20))  # scanned at 10 bytes, then grew
    fd = os.open(source, os.O_RDONLY)
    try:
        assert Objects(objects).write_file(fd, sha256(b"x" * 10), size=10) is False
        assert os.lseek(fd, 0, os.SEEK_CUR) == 11  # read no more than size + 1 bytes
    finally:
        os.close(fd)
    assert os.listdir(objects) == []


# --- item 12: names ----------------------------------------------------------------------

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


def test_nfd_named_static_files_are_published_under_their_nfc_name(tmp_path: Path) -> None:
    host = _host(tmp_path, {f"{NFD}.css": b"nfd{}", f"{NFD}/menu.txt": b"menu"})
    result = host.cli("build", "acme/blog", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / f"{NFC}.css").read_bytes() == b"nfd{}"
    assert (tmp_path / "out" / NFC / "menu.txt").read_bytes() == b"menu"
    assert not (tmp_path / "out" / f"{NFD}.css").exists()
    again = host.cli("build", "acme/blog")  # the stat cache keys by the NFC name too
    assert again.exit_code == 0, again.output
    assert again.output.strip() == (
        "acme/blog: unchanged since the last publish (render force acme/blog to rebuild)"
    )


def test_two_static_names_equal_after_nfc_are_an_error_naming_both(tmp_path: Path) -> None:
    host = _host(tmp_path, {f"{NFC}.css": b"one", f"{NFD}.css": b"two"})
    code, stderr = _build(host, tmp_path)
    assert stderr == _error(
        "'static/cafe\\u0301.css' and 'static/caf\\xe9.css' are the same name after "
        "Unicode normalization (NFC): static/café.css",
        "Hint: rename or remove one of them\n",
    )
    assert code == 1


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a\nb.css", "contains a control character"),
        ("invoice\u202egpj.exe", "contains a control character"),  # right-to-left override
        ("a.css ", "has leading or trailing whitespace"),
        ("a\\b.css", "contains a slash"),
        ("a\uff0fb.css", "contains a slash after Unicode normalization"),  # full-width solidus
        (os.fsdecode(b"caf\xe9.css"), "is not UTF-8"),  # Latin-1 bytes
    ],
    ids=["newline", "bidi-override", "trailing-space", "backslash", "full-width-slash", "latin-1"],
)
def test_a_static_name_a_slug_could_not_have_is_an_error_naming_it(
    tmp_path: Path, name: str, problem: str
) -> None:
    host = _host(tmp_path, {})
    static = host.site_dir("acme/blog") / "static"
    static.mkdir()
    (static / name).write_bytes(b"x")
    code, stderr = _build(host, tmp_path)
    assert stderr == _error(
        f"{'static/' + name!a}: the name {name!a} {problem}", "Hint: rename the file or folder\n"
    )
    assert code == 1


def test_an_nfd_named_template_is_read_under_its_own_name(tmp_path: Path) -> None:
    # templates are not published: they keep the name they have on disk, which is
    # the name a route or an include gives (it crashed with FileNotFoundError)
    host = make_host(
        tmp_path,
        sites={
            "acme/blog": SiteSpec(
                templates={
                    "index.html": html(f'{{% include "{NFD}.html" %}}'),
                    f"{NFD}.html": "menu",
                },
            )
        },
    )
    result = host.cli("build", "acme/blog", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "menu" in (tmp_path / "out" / "index.html").read_text()
