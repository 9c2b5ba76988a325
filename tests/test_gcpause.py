"""The build's pause of the cyclic collector: off inside, and nothing left for the next young pass."""

from __future__ import annotations

import gc

from render.build import gcpause


def test_objects_made_during_a_pause_are_not_walked_by_the_next_young_collection() -> None:
    gc.collect()
    with gcpause.paused():
        assert not gc.isenabled()
        made = [[i] for i in range(50_000)]  # as a build's records: many small containers
    assert gc.isenabled()
    # in the oldest generation already: no young collection has to walk them to get there
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(made) in oldest
    assert all(id(item) in oldest for item in made[::100])


def test_a_nested_pause_leaves_resuming_to_the_outermost() -> None:
    with gcpause.paused():
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
