"""render: a nightly static-site render pipeline for a multi-tenant site host.

The public API is small: load a host and its sites, run one site through the
pipeline, read the report. Names load on first use, so that ``import render``
(and every render worker process) stays light.
"""

import importlib as _importlib
from typing import Any as _Any

__version__ = "0.1.0"

_LAZY = {
    "Options": "render.pipeline",
    "Outcome": "render.pipeline",
    "RunReport": "render.pipeline",
    "run_site": "render.pipeline",
    "RenderError": "render.errors",
    "load_host": "render.config",
    "load_site": "render.config",
}

__all__ = sorted(["__version__", *_LAZY])


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'render' has no attribute {name!r}")
    return getattr(_importlib.import_module(module), name)
