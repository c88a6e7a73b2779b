"""The volunteer cache's bookkeeping: least recently used first, pinned blobs never."""

from __future__ import annotations

from volunteer_node.cache import CacheIndex


def test_victims_are_least_recently_used_first() -> None:
    index = CacheIndex()
    index.load([("a", 1), ("b", 2), ("c", 3)])
    index.used("a", 1)
    index.used("d", 4)
    assert index.victims() == ["b", "c", "a", "d"]


def test_pinned_blobs_are_never_victims_until_every_pin_is_gone() -> None:
    index = CacheIndex()
    index.load([("a", 1), ("b", 2)])
    index.pin("a")
    index.pin("a")
    index.unpin("a")
    assert index.victims() == ["b"]
    index.unpin("a")
    assert index.victims() == ["a", "b"]


def test_forgotten_blobs_are_no_victims() -> None:
    index = CacheIndex()
    index.load([("a", 1), ("b", 2)])
    index.forget("a")
    index.forget("never-held")
    assert index.victims() == ["b"]


def test_room_needed_counts_the_other_fetches_under_way() -> None:
    index = CacheIndex()
    index.fetching("a", 10)
    index.fetching("b", 20)
    assert index.room_needed("b", 20) == 30, "its own bytes once, and a's"
    assert index.room_needed("c", 5) == 35
    index.fetched("a")
    assert index.room_needed("c", 5) == 25
