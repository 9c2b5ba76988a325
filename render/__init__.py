"""render: a nightly static-site render pipeline for a multi-tenant site host."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
