"""Test kit for the mirror: publish test sites into a real local store, run a real nginx."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from conftest import require

from render.build.tree import FileEntry, content_type, write_object
from render.publish.store import LocalStore
from render.publish.versions import DEFAULT_PACK_LIMIT, publish_tree

REPO = Path(__file__).resolve().parent.parent
OVH = REPO / "ovh" / "nginx"
HOST = "blog.test"
WORKERS = 2


def site_files(tag: str, *, pad: int = 600) -> dict[str, bytes]:
    """A small site whose pages name their version ``tag``; ``static/logo.svg`` never changes."""
    filler = "<p>" + "lorem ipsum " * (pad // 12) + "</p>"

    def page(title: str, body: str) -> bytes:
        return (
            f'<!doctype html><html lang="en"><head><title>{title}</title>'
            f'<link rel="stylesheet" href="/assets/app-{tag}.css">'
            f'<meta name="render-test-version" content="{tag}"></head>'
            f"<body><h1>{title}</h1>{body}{filler}</body></html>\n"
        ).encode()

    return {
        "index.html": page("Home", f"<p>version {tag}</p>"),
        "posts/hello/index.html": page("Hello", f"<p>hello from {tag}</p>"),
        "404.html": page("Not found", "<p>no such page</p>"),
        "robots.txt": f"User-agent: *\nAllow: /\n# {tag}\nSitemap: http://{HOST}/sitemap.xml\n".encode(),
        "sitemap.xml": (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<url><loc>http://{HOST}/</loc></url><!-- {tag} --></urlset>\n"
        ).encode(),
        f"assets/app-{tag}.css": f"body{{--version:'{tag}'}}\n".encode(),
        "assets/common.css": f"h1{{--version:'{tag}'}}\n".encode(),
        "static/logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>\n',
    }


def publish_files(
    store: LocalStore,
    files: Mapping[str, bytes],
    *,
    objects: Path,
    owner: str = "acme",
    name: str = "blog",
    base_url: str = f"http://{HOST}/",
    pack_limit: int | None = DEFAULT_PACK_LIMIT,
) -> str:
    """Publish ``files`` (path -> bytes) with the real publish code; return the version id.

    ``pack_limit=None`` publishes loose blobs (``[store] layout = "loose"``)."""
    objects.mkdir(parents=True, exist_ok=True)
    entries = {
        path: FileEntry(hash=write_object(objects, data), size=len(data), type=content_type(path))
        for path, data in files.items()
    }
    result = publish_tree(
        entries,
        objects,
        owner=owner,
        name=name,
        base_url=base_url,
        store=store,
        ledger=None,
        pack_limit=pack_limit,
    )
    return result.version


def release_files(folder: Path) -> dict[str, bytes]:
    """Every file of a release (or ``current``), path -> bytes, through its shared folders.

    A release's subfolders are symlinks into the site's pool (``render.mirror.pool``):
    ``Path.rglob`` does not follow them, ``os.walk(followlinks=True)`` does.
    """
    found: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(folder, followlinks=True):
        for name in names:
            path = Path(dirpath, name)
            found[path.relative_to(folder).as_posix()] = path.read_bytes()
    return found


# --- nginx -------------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    require(found is not None, "nginx is not installed (make setup installs nginx-light)")
    assert found is not None
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mirror_conf(mirror_root: Path, *, port: int, logs: Path) -> str:
    """ovh/nginx/render-mirror.conf with its paths and port moved into the test's folders."""
    text = (OVH / "render-mirror.conf").read_text()
    text = text.replace("/var/lib/render-mirror", str(mirror_root))
    text = text.replace("/var/log/nginx", str(logs))
    text = re.sub(r"^\s*listen \[::\]:80;\n", "", text, flags=re.M)
    return re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", text)


def route_conf(*, port: int, app_port: int, mirror_port: int) -> str:
    """ovh/nginx/route.conf listening on ``port``, its upstreams on loopback."""
    text = (OVH / "route.conf").read_text()
    text = re.sub(
        r"server \S+;(\s*# render:app-upstream)", rf"server 127.0.0.1:{app_port};\1", text
    )
    text = re.sub(
        r"server \S+;(\s*# render:mirror-upstream)", rf"server 127.0.0.1:{mirror_port};\1", text
    )
    text = re.sub(r"^\s*listen \[::\]:80;\n", "", text, flags=re.M)
    return re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", text)


@dataclass
class Nginx:
    """nginx in the foreground, serving the mirror, the front proxy and a one-line app."""

    folder: Path
    mirror_root: Path
    mirror_port: int = 0
    route_port: int = 0
    app_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        binary = nginx_binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mirror_root.mkdir(parents=True, exist_ok=True)
        self.mirror_port, self.route_port, self.app_port = free_port(), free_port(), free_port()
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        (self.mirror_root / "hosts.map").touch()
        (self.folder / "mirror.conf").write_text(
            mirror_conf(self.mirror_root, port=self.mirror_port, logs=logs)
        )
        (self.folder / "route.conf").write_text(
            route_conf(port=self.route_port, app_port=self.app_port, mirror_port=self.mirror_port)
        )
        temp = "\n".join(
            f"    {kind}_temp_path {self.folder}/tmp-{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read tmp_path
        (self.folder / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes {WORKERS};\npid {self.folder}/nginx.pid;\n"
            f"error_log {logs}/error.log notice;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"{temp}\n"
            # a host may turn symlinks off for every server: the mirror's turns them back on
            "    disable_symlinks on;\n"
            f"    access_log off;\n"
            f"    include {self.folder}/mirror.conf;\n"
            f"    include {self.folder}/route.conf;\n"
            f"    server {{ listen 127.0.0.1:{self.app_port}; access_log off;\n"
            '        location / { default_type text/plain; return 200 "app\\n"; } }\n'
            "}\n"
        )
        args = [
            binary,
            "-p",
            f"{self.folder}/",
            "-c",
            f"{self.folder}/nginx.conf",
            "-e",
            f"{logs}/error.log",
        ]
        check = subprocess.run([*args, "-t", "-q"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        for port in (self.mirror_port, self.route_port, self.app_port):
            while True:
                assert self.process.poll() is None, f"nginx exited: {self.error_log()}"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"nginx did not listen on {port}"
                    time.sleep(0.02)
        return self

    def reload(self, *, host: str = HOST) -> None:
        """What render-mirror-reload.service does after hosts.map changes; wait until ``host`` is served."""
        assert self.process is not None
        exited = self.error_log().count("exited with code")
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        # the old workers (with the old map) must be gone, or a new connection may still reach one
        while self.error_log().count("exited with code") < exited + WORKERS or not fetch(
            self.mirror_port, "/", host=host
        ).header("x-render-version"):
            assert self.process.poll() is None, f"nginx exited: {self.error_log()}"
            assert time.monotonic() < deadline, f"nginx does not serve {host} after a reload"
            time.sleep(0.02)

    def error_log(self) -> str:
        path = self.folder / "logs" / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def fetch(
    port: int,
    path: str,
    *,
    host: str = HOST,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> Reply:
    """One request to 127.0.0.1:port (on ``conn`` when given, to keep it alive)."""
    own = conn is None
    connection = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        body = response.read()
        return Reply(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=body,
        )
    finally:
        if own:
            connection.close()
