"""Pause Python's cyclic garbage collector for the length of a build.

A build holds the last build's record (ten thousand page records, half a
million small objects on the 10,000-article benchmark site) while it
allocates as many again. Every full collection walks all of them, and the
allocation counters trigger several during one rebuild: measured, they took
the planning of a 10,000-row route from 0.09 s to 0.25-0.31 s. Build objects
are freed by reference counting when they go; the few cycles a build makes
(template environments) are collected after it, when the collector resumes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No automatic cyclic collection inside; nested uses leave it to the outermost."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
