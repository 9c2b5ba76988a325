"""``render edge deploy --dry-run``: the wrangler command and config, and the host claims the
Worker needs; a real deploy is the user's step and never runs here."""

from __future__ import annotations

import tomllib
from pathlib import Path

from click.testing import CliRunner
from mirrorkit import publish_files, site_files
from s3server import moto_url, new_bucket, s3_config, s3_env  # noqa: F401 - fixtures

from render.cli import main
from render.edge import deploy
from render.publish.hosts import claim_key, holder
from render.publish.store import LocalStore, S3Store

REPO = Path(__file__).resolve().parent.parent


def _host(tmp_path: Path, store_lines: str) -> Path:
    (tmp_path / "render.toml").write_text(f"[store]\n{store_lines}\n")
    (tmp_path / "sites").mkdir()
    return tmp_path / "render.toml"


def test_edge_deploy_dry_run_prints_the_command_and_config(moto_url: str, tmp_path: Path) -> None:  # noqa: F811
    bucket = new_bucket(moto_url)
    store = S3Store(s3_config(moto_url, bucket))
    publish_files(store, site_files("one"), objects=tmp_path / "objects")  # type: ignore[arg-type]
    store.delete([claim_key("blog.test")])  # a site published before host claims existed
    config = _host(
        tmp_path,
        f'kind = "s3"\nbucket = "{bucket}"\nendpoint_url = "{moto_url}"\n'
        'region = "us-east-1"\nprefix = ""',
    )
    args = [
        "edge",
        "deploy",
        "--dry-run",
        "--config",
        str(config),
        "--origin",
        "https://app.example.com",
        "--route",
        "blog.test",
        "--zone",
        "test",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    target = tmp_path / ".render" / "edge" / "wrangler.toml"
    assert lines[0] == "# would claim the host blog.test for acme/blog (hosts/blog.test.json)"
    assert lines[1] == f"# would write {target}:"
    assert lines[-2:] == ["# would run:", f"npx --yes wrangler@3 deploy --config {target}"]
    wrangler = tomllib.loads("\n".join(lines[2:-2]))
    assert wrangler["main"] == str(REPO / "edge" / "src" / "worker.js")
    assert wrangler["r2_buckets"] == [{"binding": "BUCKET", "bucket_name": bucket}]
    assert wrangler["routes"] == [{"pattern": "blog.test/*", "zone_name": "test"}]
    assert wrangler["vars"] == {
        "ROOT_TTL_SECONDS": "5",
        "STORE_PREFIX": "",
        "SESSION_COOKIE": "session",
        "ORIGIN": "https://app.example.com",
    }
    # a dry run writes nothing: no config file, no claim
    assert not target.exists()
    assert holder(store, "blog.test") is None
    # what the real deploy does before wrangler: the missing claim
    missing = deploy.unclaimed(store)
    deploy.claim_all(store, missing, grace_hours=48)
    assert holder(store, "blog.test") == "acme/blog"
    assert deploy.unclaimed(store) == []


def test_edge_deploy_refuses_a_local_store(tmp_path: Path) -> None:
    config = _host(tmp_path, 'path = "bucket"')
    LocalStore(tmp_path / "bucket")
    result = CliRunner().invoke(main, ["edge", "deploy", "--dry-run", "--config", str(config)])
    assert result.exit_code == 2
    assert "reads an R2 bucket" in result.output


def test_edge_wrangler_toml_binds_the_bucket_the_worker_reads() -> None:
    reference = tomllib.loads((REPO / "edge" / "wrangler.toml").read_text())
    assert reference["main"] == "src/worker.js"
    assert reference["r2_buckets"][0]["binding"] == "BUCKET"
    worker = (REPO / "edge" / "src" / "worker.js").read_text()
    assert reference["vars"], "the Worker's settings are in [vars]"
    for name in reference["vars"]:
        assert f"env.{name}" in worker, name
