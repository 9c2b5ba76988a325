"""Pause Python's cyclic garbage collector for the length of a build.

A build holds the last build's record (ten thousand page records, half a
million small objects on the 10,000-article benchmark site) while it
allocates as many again. Every full collection walks all of them, and the
allocation counters trigger several during one rebuild: measured, they took
the planning of a 10,000-row route from 0.09 s to 0.25-0.31 s. Build objects
are freed by reference counting when they go.

Resuming has a cost of its own: everything allocated during the pause sits
in the youngest generation, and the first collection after it walked all of
it (0.1 s after a rebuild of that site). So the pause ends by moving those
objects to the oldest generation (``gc.freeze`` then ``gc.unfreeze``, two
list splices): the few cycles a build makes (template environments) are
collected by a later full collection instead.
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
            gc.freeze()  # every tracked object to the permanent generation...
            gc.unfreeze()  # ...and from there to the oldest: no young objects left to walk
            gc.enable()
