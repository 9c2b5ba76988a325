"""Origin benchmark: ``render origin`` against nginx on the same tree, and a stale page's first byte.

Publishes the synthetic 10,000-article site (``bench/sitegen.py``) through the
pipeline (Lighthouse off), writes the live version's tree into a folder that
nginx serves, and runs ``wrk`` (Debian's) for ``--seconds`` at
``--connections`` against each server in turn, in the same run, on random
article URLs (cached pages: every URL was fetched once before). Then it edits
one article's body at a time and measures the time to the first byte of that
article's page from the origin: first right after the edit (the origin finds
what changed, then renders the page) and then with the change already found
(the render alone), and the time to the first byte of another article's page,
not stale, asked for right after an edit (it waits while the origin plans the
article route again: the edited column is in it). Not a test: numbers, not
assertions.

    python bench/origin.py                     # 10,000 articles, 30 s, 200 connections
    python bench/origin.py --articles 2000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sitegen import generate  # noqa: E402
from render.build.objects import Objects  # noqa: E402
from render.build.record import build_dir  # noqa: E402
from render.build.tree import materialize  # noqa: E402
from render.config import load_host, load_site, site_dirs  # noqa: E402
from render.publish.store import open_store  # noqa: E402
from render.publish.versions import read_root, read_tree  # noqa: E402

HOST = "bench.example.com"

NGINX_CONF = """\
worker_processes {workers};
pid {run}/nginx.pid;
error_log {run}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    charset utf-8;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        server_name _;
        root {tree};
        add_header Cache-Control "public, max-age=60" always;
        add_header X-Content-Type-Options nosniff always;
        location / {{ try_files $uri ${{uri}}index.html $uri/index.html =404; }}
    }}
}}
"""

WRK_SCRIPT = """\
local paths = {{}}
for line in io.lines("{urls}") do paths[#paths + 1] = line end
math.randomseed(7)
request = function()
  return wrk.format("GET", paths[math.random(#paths)], {{ ["Host"] = "{host}" }})
end
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _origin(
    port: int, workers: int, *, env: dict[str, str], cwd: Path, stderr: Any = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``render origin`` on 127.0.0.1:``port`` with the host's settings, no access log."""
    command = [sys.executable, "-m", "render", "origin", "--bind", f"127.0.0.1:{port}"]
    return subprocess.Popen(
        [*command, "--workers", str(workers), "--no-access-log"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _wait(port: int) -> None:
    give_up = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)


def _wrk(
    port: int, script: Path, *, seconds: int, connections: int, threads: int
) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {
        p: _ms(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        for p in ("50", "99")
    }
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in sockets.groups()) if sockets else 0
    )
    return {
        "requests_per_second": rps,
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "requests": total,
        "errors": errors,
    }


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return round(float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


def _ttfb(port: int, path: str) -> tuple[float, str]:
    started = time.perf_counter()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": HOST})
    with urllib.request.urlopen(request, timeout=120) as reply:
        reply.read(1)
        first = time.perf_counter() - started
        reply.read()
        return first * 1000, reply.headers.get("X-Render-Page") or "published"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="origin processes and nginx workers (the same number)",
    )
    parser.add_argument("--edits", type=int, default=10, help="stale-page measurements")
    args = parser.parse_args()
    if shutil.which("wrk") is None or not Path("/usr/sbin/nginx").exists():
        sys.exit("needs wrk and nginx (apt-get install wrk nginx-light)")
    work = Path(tempfile.mkdtemp(prefix="render-bench-origin-"))
    work.chmod(0o755)  # nginx's workers (www-data) read the tree
    procs: list[subprocess.Popen[bytes]] = []
    try:
        generate(work / "gen", articles=args.articles)
        host_root = work / "gen" / "host"
        with open(host_root / "render.toml", "a") as fh:
            fh.write("[origin]\nmax_wait_ms = 10000\nrefresh_seconds = 2\n")
        env = {**os.environ, "RENDER_CONFIG": str(host_root / "render.toml")}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "render", "force", "bench/articles", "--skip-lighthouse"],
            check=True,
            env=env,
            cwd=host_root,
            stdout=subprocess.DEVNULL,
        )
        publish_seconds = time.perf_counter() - started
        host = load_host(host_root / "render.toml")
        store = open_store(host)
        root, _ = read_root(store, owner="bench", name="articles")
        assert root is not None
        tree = read_tree(store, owner="bench", name="articles", version=root.version)
        site = load_site(site_dirs(host)[0], host=host)
        served = work / "tree"
        materialize(tree.files, Objects(build_dir(host, site) / "objects"), served)
        urls = [
            quote("/" + p.removesuffix("index.html")) for p in tree.files if p.startswith("posts/")
        ]
        (work / "urls.txt").write_text("\n".join(urls) + "\n")
        script = work / "wrk.lua"
        script.write_text(WRK_SCRIPT.format(urls=work / "urls.txt", host=HOST))

        run = work / "nginx"
        run.mkdir()
        nginx_port, origin_port = _port(), _port()
        (run / "nginx.conf").write_text(
            NGINX_CONF.format(workers=args.workers, run=run, port=nginx_port, tree=served)
        )
        procs.append(
            subprocess.Popen(
                ["/usr/sbin/nginx", "-p", str(run), "-c", str(run / "nginx.conf")],
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(_origin(origin_port, args.workers, env=env, cwd=host_root))
        _wait(nginx_port)
        _wait(origin_port)
        for port in (nginx_port, origin_port):  # warm: every page read once (the origin's cache)
            _wrk(port, script, seconds=3, connections=8, threads=1)
            for url in urls:
                try:
                    urllib.request.urlopen(
                        urllib.request.Request(
                            f"http://127.0.0.1:{port}{url}", headers={"Host": HOST}
                        )
                    ).read()
                except urllib.error.HTTPError as exc:
                    sys.exit(
                        f"{url} on port {port} ({'nginx' if port == nginx_port else 'origin'}): {exc}"
                    )
        load = {
            name: _wrk(port, script, seconds=args.seconds, connections=args.connections, threads=2)
            for name, port in (("nginx", nginx_port), ("render origin (granian)", origin_port))
        }
        ratio = (
            load["render origin (granian)"]["requests_per_second"]
            / load["nginx"]["requests_per_second"]
        )
        # the same application under uvicorn, for the choice of server
        port = _port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "render.origin.server:make_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env={**env, "RENDER_ORIGIN_ACCESS_LOG": "0"},
            cwd=host_root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(port)
            _wrk(port, script, seconds=3, connections=8, threads=1)
            load["the same app under uvicorn"] = _wrk(
                port, script, seconds=args.seconds, connections=args.connections, threads=2
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

        # stale pages: one article's body edited at a time, on a one-process origin (each
        # process finds changes on its own: a request must reach the one that found it)
        procs[-1].send_signal(signal.SIGTERM)
        procs[-1].wait(timeout=60)
        origin_port = _port()
        log = work / "origin-1.log"
        with open(log, "w") as err:
            procs.append(_origin(origin_port, 1, env=env, cwd=host_root, stderr=err))
        _wait(origin_port)
        _ttfb(origin_port, "/robots.txt")

        def found() -> int:
            return log.read_text().count("origin.analysed")

        db_path = host_root / "sites" / "bench" / "articles" / "site.db"
        slugs = [u.split("/")[2] for u in urls if u.count("/") == 3][: args.edits * 4]
        after_edit: list[float] = []
        render_only: list[float] = []
        other_after_edit: list[float] = []
        for n in range(args.edits):
            edited, found_first, edited_too, other = slugs[4 * n : 4 * n + 4]
            for slug, into in (
                (edited, after_edit),
                (found_first, render_only),
                (edited_too, other_after_edit),
            ):
                db = sqlite3.connect(db_path)
                db.execute("update articles set body = body || ' edited' where slug = ?", (slug,))
                db.commit()
                db.close()
                if into is render_only:  # let the origin find the change first (any request does)
                    before = found()
                    _ttfb(origin_port, "/robots.txt")
                    while found() == before:
                        time.sleep(0.05)
                if into is other_after_edit:  # an article that is not stale, asked for first
                    ms, how = _ttfb(origin_port, f"/posts/{other}/")
                    into.append(round(ms, 2))
                    if how != "published":
                        print(f"note: /posts/{other}/ was served {how}", file=sys.stderr)
                    into = []
                ms, how = _ttfb(origin_port, f"/posts/{slug}/")
                into.append(round(ms, 2))
                if "fresh" not in how:
                    print(f"note: /posts/{slug}/ was served {how}", file=sys.stderr)
        result = {
            "articles": args.articles,
            "pages_in_tree": len(tree.files),
            "publish_seconds": round(publish_seconds, 1),
            "seconds": args.seconds,
            "connections": args.connections,
            "workers": args.workers,
            "load": load,
            "origin_over_nginx": round(ratio, 3),
            "stale_page_ttfb_ms": {
                "right_after_edit_p50": statistics.median(after_edit),
                "right_after_edit": after_edit,
                "change_already_found_p50": statistics.median(render_only),
                "change_already_found": render_only,
            },
            # a page that is not stale, asked for right after another article's edit: it
            # waits while the origin plans the article route again (the change is in it)
            "other_article_right_after_edit_ttfb_ms": {
                "p50": statistics.median(other_after_edit),
                "each": other_after_edit,
            },
        }
        print(json.dumps(result, indent=2))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if proc is procs[-1] else signal.SIGQUIT)
                proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
