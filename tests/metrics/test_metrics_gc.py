"""The garbage-collector pause histogram (``kitpin_gc_pause_seconds``)."""

from __future__ import annotations

import gc

from controller.metrics import Metrics


def _count(m: Metrics, generation: int) -> float:
    return m.value("kitpin_gc_pause_seconds_count", {"generation": str(generation)})


def test_every_collection_is_timed_by_generation() -> None:
    m = Metrics()
    m.watch_gc()
    try:
        for generation in (0, 1, 2):
            before = _count(m, generation)
            gc.collect(generation)
            assert _count(m, generation) == before + 1
        assert m.value("kitpin_gc_pause_seconds_sum", {"generation": "2"}) > 0
    finally:
        m.unwatch_gc()


def test_watching_twice_installs_one_hook_and_unwatch_removes_it() -> None:
    m = Metrics()
    hooks = len(gc.callbacks)
    m.watch_gc()
    m.watch_gc()
    assert len(gc.callbacks) == hooks + 1
    m.unwatch_gc()
    assert len(gc.callbacks) == hooks
    gc.collect()
    assert _count(m, 2) == 0


def test_the_series_exist_before_any_collection() -> None:
    text = Metrics().render().decode()
    for generation in (0, 1, 2):
        assert f'kitpin_gc_pause_seconds_count{{generation="{generation}"}}' in text
