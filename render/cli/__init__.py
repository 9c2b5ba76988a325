"""The ``render`` command: thin, it parses, calls the library and shows results.

Each area keeps its commands in a module of this package; this file only
assembles the group.
"""

from __future__ import annotations

import click

from render import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="render")
def main() -> None:
    """Render tenant sites from SQLite + Jinja into static trees, check and publish them.

    \b
    Start here:
        render init --demo demo && cd demo && render nightly && render serve
    """


def _register() -> None:
    from render.cli import build as _build
    from render.cli import edge as _edge
    from render.cli import mirror as _mirror
    from render.cli import origin as _origin
    from render.cli import publish as _publish
    from render.cli import report as _report
    from render.cli import scheduler as _scheduler
    from render.cli import worker as _worker

    for module in (_build, _edge, _mirror, _origin, _publish, _report, _scheduler, _worker):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
