"""``python -m render``: the same as the ``render`` command."""

from render.cli import main

main()
