"""Equal-jitter exponential backoff: each delay in [step/2, step], the step doubling to a cap."""

from __future__ import annotations

import random

from daemon.backoff import Backoff


def step(backoff: Backoff, failures: int) -> float:
    return float(min(backoff.maximum, backoff.initial * 2**failures))


def delays(backoff: Backoff, count: int) -> list[float]:
    return [backoff.next_delay() for _ in range(count)]


def test_each_delay_lies_between_half_the_step_and_the_step() -> None:
    backoff = Backoff(initial=0.5, maximum=15.0, rng=random.Random(7))
    for failures, delay in enumerate(delays(backoff, 12)):
        assert step(backoff, failures) / 2 <= delay <= step(backoff, failures)


def test_delays_grow_until_the_cap() -> None:
    backoff = Backoff(initial=0.5, maximum=15.0, rng=random.Random(7))
    growing = delays(backoff, 6)  # steps 0.5 .. 16 -> capped from the sixth on
    assert growing == sorted(growing)
    assert growing[-1] > 4 * growing[0]


def test_delays_are_capped_at_the_maximum() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, rng=random.Random(3))
    capped = delays(backoff, 50)[2:]
    assert all(2.0 <= delay <= 4.0 for delay in capped)
    assert max(capped) > 3.5, "the jitter spans the upper half of the cap"


def test_a_long_outage_keeps_the_delay_capped() -> None:
    """At ~11 s a try, 1100 failures are a coordinator gone for about three and a half hours."""
    backoff = Backoff(initial=0.5, maximum=15.0, rng=random.Random(5))
    assert all(7.5 <= delay <= 15.0 for delay in delays(backoff, 1100)[10:])


def test_reset_starts_over() -> None:
    backoff = Backoff(initial=0.5, maximum=15.0, rng=random.Random(11))
    delays(backoff, 8)
    backoff.reset()
    again = delays(backoff, 3)
    assert 0.25 <= again[0] <= 0.5
    assert 0.5 <= again[1] <= 1.0
    assert 1.0 <= again[2] <= 2.0


def test_the_same_seed_gives_the_same_delays() -> None:
    first = delays(Backoff(rng=random.Random(42)), 10)
    assert first == delays(Backoff(rng=random.Random(42)), 10)
    assert first != delays(Backoff(rng=random.Random(43)), 10)
