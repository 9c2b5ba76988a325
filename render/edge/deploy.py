"""``render edge deploy``: the ``wrangler`` command and the config it deploys the edge Worker with.

The config is ``edge/wrangler.toml`` with the host's store settings filled in
(the R2 bucket, the key prefix), the origin for logged-in people, and the
Worker's main module given as an absolute path, written to
``<state>/edge/wrangler.toml``. Before either, ``edge/src/routing.js`` is
written again from ``render.serve.routing`` so the Worker routes as nginx does.

The Worker finds a site, and its live version, by its host claim
(``hosts/<host>.json``, which every publish that takes a new host writes and
every root switch points at the version it made live). Sites published before
claims existed have none: a deploy claims their hosts first and points them
(``unclaimed``, ``claim_all``).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from render.config import HostConfig
from render.edge.routing import write_routing_js
from render.errors import ConfigError, PublishError
from render.publish import hosts
from render.publish.hosts import host_of
from render.publish.store import Store
from render.publish.versions import read_root
from render.serve.routing import SESSION_COOKIE

EDGE_DIR = Path(__file__).resolve().parent.parent.parent / "edge"
WRANGLER = ("npx", "--yes", "wrangler@3")


@dataclass(frozen=True, kw_only=True)
class DeployPlan:
    config_path: Path
    config: str
    command: tuple[str, ...]

    def shell(self) -> str:
        return shlex.join(self.command)


def _toml(text: str) -> str:
    return json.dumps(text)  # a TOML basic string is a JSON string for these values


def plan(
    host: HostConfig,
    *,
    name: str = "render-edge",
    origin: str = "",
    routes: tuple[str, ...] = (),
    zone: str = "",
    ttl_seconds: int = 5,
    edge_dir: Path = EDGE_DIR,
) -> DeployPlan:
    """What ``render edge deploy`` writes and runs; raises ``ConfigError`` when it cannot deploy."""
    store = host.store
    if store.kind != "s3" or not store.bucket:
        raise ConfigError(
            "render edge deploy: the Worker reads an R2 bucket, and [store] is a local folder",
            hint="set [store] kind = 's3', bucket and endpoint_url to the R2 bucket the sites publish to",
        )
    main = edge_dir / "src" / "worker.js"
    if not main.is_file():
        raise ConfigError(
            f"render edge deploy: {main} is missing",
            hint="run it from a clone of the render repository (the Worker is in edge/)",
        )
    if routes and not zone:
        raise ConfigError(
            "render edge deploy: --route needs --zone (the Cloudflare zone the host names are in)",
            hint="e.g. --route blog.example.com --zone example.com",
        )
    route_lines = "".join(
        f"  {{ pattern = {_toml(r + '/*')}, zone_name = {_toml(zone)} }},\n" for r in routes
    )
    config = (
        "# written by render edge deploy from edge/wrangler.toml\n"
        f"name = {_toml(name)}\n"
        f"main = {_toml(str(main))}\n"
        'compatibility_date = "2025-07-01"\n'
        "workers_dev = false\n"
        + (f"routes = [\n{route_lines}]\n" if routes else "")
        + "\n[[r2_buckets]]\n"
        'binding = "BUCKET"\n'
        f"bucket_name = {_toml(store.bucket)}\n"
        "\n[vars]\n"
        f'ROOT_TTL_SECONDS = "{ttl_seconds}"\n'
        f"STORE_PREFIX = {_toml(store.prefix.strip('/'))}\n"
        f"SESSION_COOKIE = {_toml(SESSION_COOKIE)}\n"
        f"ORIGIN = {_toml(origin)}\n"
        "\n[observability]\nenabled = true\n"
    )
    config_path = host.state_dir / "edge" / "wrangler.toml"
    return DeployPlan(
        config_path=config_path,
        config=config,
        command=(*WRANGLER, "deploy", "--config", str(config_path)),
    )


def write(plan_: DeployPlan, *, edge_dir: Path = EDGE_DIR) -> None:
    """Write the routing table and the config (what a real deploy runs wrangler on)."""
    write_routing_js(edge_dir)
    plan_.config_path.parent.mkdir(parents=True, exist_ok=True)
    plan_.config_path.write_text(plan_.config, encoding="utf-8")


@dataclass(frozen=True, kw_only=True)
class Unclaimed:
    """A live site whose host has no claim: the Worker finds a site only by its claim."""

    site: str  # owner/name
    host: str
    version: str  # the live version (a claim names the version whose publish wrote it)


def unclaimed(store: Store) -> list[Unclaimed]:
    """Live sites published before host claims existed, whose host no claim names yet."""
    found: list[Unclaimed] = []
    for owner, name in store.sites():
        try:
            root, _ = read_root(store, owner=owner, name=name)
        except PublishError:
            continue  # a broken root: the site is unavailable everywhere, not the Worker's to fix
        host = host_of(root.base_url) if root is not None else None
        if root is None or host is None or hosts.holder(store, host) is not None:
            continue
        found.append(Unclaimed(site=f"{owner}/{name}", host=host, version=root.version))
    return found


def claim_all(store: Store, missing: list[Unclaimed], *, grace_hours: float) -> None:
    """Write the missing claims (the same conditional claim a publish makes), then point
    each at its site's live version, as a publish's root switch does."""
    for item in missing:
        hosts.claim(
            store, host=item.host, site=item.site, version=item.version, grace_hours=grace_hours
        )
        hosts.point(store, host=item.host, site=item.site)
