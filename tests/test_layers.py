"""The flow stays one-way: a module imports only from its own step or earlier ones.

STYLE.md's "Import layers" table, adapted to the modules that exist. Each layer is
a sequence of steps (the table's arrows: ``islands -> builder`` puts islands in
an earlier step than builder); modules in one step are peers. Every module under
``render/`` must appear exactly once, so a new module has to be placed
deliberately. Imports are read with ``ast``: top-level and function-level
``import render.x`` / ``from render[.x] import y`` (and relative imports), under
``TYPE_CHECKING`` too, since a type-only import is still a dependency of the
design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "render"

LAYERS: list[tuple[str, list[list[str]]]] = [
    (
        "0 foundations",
        [
            # ``render`` itself: its body imports nothing from render; the public names
            # are loaded on first use through importlib (no import statement), so any
            # module may read ``render.__version__``.
            ["render", "errors", "_spawn_main"],
            # leaves that need at most errors: paths (route patterns -> safe output
            # paths, which config validates), cron (schedule strings), demo (``render init``)
            # files: the file-system guarantees (atomic or durable replace, flock, UTC stamps)
            ["paths", "cron", "demo", "files"],
            # run: a run's bookkeeping (per-site locks, log lines, the ledger), which any
            # stage may take part in and which needs nothing of theirs
            ["run", "run.locks", "run.buildlog", "run.ledger"],
        ],
    ),
    # configfile: reading a TOML file into typed sections, every problem collected
    # siterules: what a site.toml may say beyond types and ranges (it reads config's types)
    ("1 config", [["configfile"], ["config", "siterules"]]),
    (
        "2 build",
        [
            # sitefiles: reading a site's static/ and templates/ without following links
            ["build", "build.gcpause", "build.snapshot", "build.objects", "build.sitefiles"],
            ["build.tree"],
            # pagefacts is per-page SEO work done inside the render worker
            ["build.sandbox", "build.workers", "islands", "build.pagefacts"],
            # changes: which columns changed since the last build (reads sandbox's reads);
            # record: what the last complete build made and read
            ["build.changes", "build.renderer", "build.record"],
            # onrequest: pages ``render origin`` rendered since the last build, for the next one
            ["build.onrequest"],
            # sources: templates and static hashed; plan: routes -> page specs;
            # reuse: what the record lets this build keep
            ["build.sources", "build.plan", "build.reuse"],
            ["builder"],
        ],
    ),
    (
        "3 check",
        [
            # loopback: serving a built tree on 127.0.0.1 (audits, and ``render serve``)
            ["check", "check.loopback"],
            ["check.sitemap", "check.jsparity", "check.lhrunner", "check.auditworker"],
            ["seo", "lighthouse"],
            ["check.gate"],
        ],
    ),
    (
        "4 publish",
        [
            # blobwrite: many new files written once, named when durable; s3errors: how
            # an S3/R2 failure reads (both for the store)
            ["publish", "publish.manifest", "publish.blobwrite", "publish.s3errors"],
            ["publish.store"],
            # hosts: which site holds a host name (claims in the store); packs: a version's
            # new blobs in a few objects, read by range
            ["publish.hosts", "publish.packs"],
            # reports: a version's audit output, stored beside it; gc collects it with it
            ["publish.reports"],
            ["publish.versions"],
            # staging: a version put in the store, and its root switch later, elsewhere
            ["publish.staging"],
            # repack: the live version's blobs written again into few packs (gc, repair)
            ["publish.repack"],
            # history: listing versions, rollback; gc: old versions, unnamed blobs and packs
            # deleted (and the live version repacked) under a lease in root.json
            ["publish.history", "publish.gc"],
            # repair: the live version's blobs read back, the bad ones uploaded again
            ["publish.purge", "publish.repair"],
        ],
    ),
    (
        "5 mirror and serve",
        [
            # layout: the mirror's folders and how its files are written
            # versioned: the /_v/ URL space every server of a site answers (serve, mirror, origin)
            ["mirror", "mirror.layout", "serve", "serve.routing", "serve.versioned"],
            # fetch: a release's blobs, downloaded and checked, or linked; pool: the folders
            # kept releases share, named by their content
            ["mirror.fetch", "mirror.pool"],
            ["mirror.sync", "serve.live"],
            ["mirror.status"],
            # the edge Worker's routing table (generated from serve.routing) and its deploy plan
            ["edge", "edge.routing", "edge.deploy"],
        ],
    ),
    (
        "6 report",
        [
            # the report document reads the ledger; the dashboard, the terminal tables and the
            # metrics are drawn from it; serve puts the dashboard beside the live sites
            ["report", "report.document"],
            ["report.terminal", "report.dashboard", "report.metrics"],
            ["report.serve"],
        ],
    ),
    (
        # origin: the production origin (it shows the report's dashboard to loopback);
        # fresh re-renders stale pages through the builder
        "6b origin",
        [
            ["origin", "origin.cache", "origin.shared"],
            ["origin.fresh"],
            ["origin.app"],
            ["origin.server"],
        ],
    ),
    # staged: an audit task's work, a staged version audited and then switched live
    ("7 pipeline", [["pipeline"], ["staged"]]),
    (
        "7b distribute",
        [
            # builds on Celery workers: the app and its settings, the site lock in Redis,
            # the build record carried through the store; affinity: heartbeats and last
            # builders in Redis; tasks call pipeline.run_site; night keeps the slots full,
            # each site to its last builder; enqueue sends them and writes the results
            # to the enqueuer's ledger
            [
                "distribute",
                "distribute.broker",
                "distribute.sitelock",
                "distribute.carry",
                "distribute.capacity",
            ],
            ["distribute.affinity"],
            ["distribute.tasks", "distribute.night"],
            ["distribute.enqueue"],
        ],
    ),
    (
        "8 entry points",
        [
            ["scheduler", "cli._common"],
            [
                "cli.build",
                "cli.edge",
                "cli.mirror",
                "cli.origin",
                "cli.publish",
                "cli.report",
                "cli.scheduler",
                "cli.worker",
            ],
            ["cli"],
            ["__main__"],
        ],
    ),
]

# The stage packages: every module of one lies in that package's layer, so the folder
# listing is the layer table (``render/build/`` is the build layer, and so on).
PACKAGE_LAYERS = {
    "run": "0 foundations",
    "build": "2 build",
    "check": "3 check",
    "publish": "4 publish",
    "mirror": "5 mirror and serve",
    "serve": "5 mirror and serve",
    "edge": "5 mirror and serve",
    "origin": "6b origin",
    "report": "6 report",
    "distribute": "7b distribute",
    "cli": "8 entry points",
}

# Imports from a later step that are known and accepted: (importer, imported) -> reason.
# Empty today; an entry needs a reason a reviewer can check.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _rank() -> dict[str, tuple[int, int]]:
    rank: dict[str, tuple[int, int]] = {}
    for layer, (_label, steps) in enumerate(LAYERS):
        for step, modules in enumerate(steps):
            for module in modules:
                assert module not in rank, f"{module} is listed twice"
                rank[module] = (layer, step)
    return rank


RANK = _rank()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "render"


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """``render.cli.build`` -> ``cli.build``; ``render`` -> ``render``."""
    return name.removeprefix("render.") if name != "render" else name


def imports_of(module: str) -> set[str]:
    """The render modules ``module`` imports, by the names LAYERS uses."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if package == ["render"]:
        package = []
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] == "render")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, ``level - 1`` steps up
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])]) or "render"
            elif node.module and node.module.split(".")[0] == "render":
                target = _resolve(node.module)
            else:
                continue
            for alias in node.names:  # ``from render import seo`` imports the module seo
                sub = alias.name if target == "render" else f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    found.discard(module)
    return found


def test_every_module_has_a_layer() -> None:
    assert sorted(set(MODULES) - set(RANK)) == [], "add the new module to LAYERS"
    assert sorted(set(RANK) - set(MODULES)) == [], "remove the module LAYERS names but is gone"


@pytest.mark.parametrize("package", sorted(PACKAGE_LAYERS))
def test_a_stage_package_lies_in_one_layer(package: str) -> None:
    members = [m for m in MODULES if m == package or m.startswith(f"{package}.")]
    assert members, f"render/{package}/ is gone: drop it from PACKAGE_LAYERS"
    layers = {LAYERS[RANK[m][0]][0] for m in members}
    assert layers == {PACKAGE_LAYERS[package]}, f"render/{package}/ spans {sorted(layers)}"


def test_the_import_reader_sees_function_level_and_package_imports() -> None:
    # scheduler imports pipeline inside a function; the record reads render.__version__
    assert "pipeline" in imports_of("scheduler")
    assert {"islands", "build.workers"} <= imports_of("builder")
    assert {"render", "build.tree"} <= imports_of("build.record")
    assert {"cli.build", "cli.mirror", "cli.publish", "cli.scheduler"} <= imports_of("cli")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_later_layer(module: str) -> None:
    later = sorted(
        dep
        for dep in imports_of(module)
        if RANK[dep] > RANK[module] and (module, dep) not in EXCEPTIONS
    )
    where = LAYERS[RANK[module][0]][0]
    assert later == [], f"render.{module} (layer {where}) imports later module(s) {later}"


def test_exceptions_are_still_needed() -> None:
    for importer, imported in EXCEPTIONS:
        assert imported in imports_of(importer), f"drop the exception {importer} -> {imported}"
