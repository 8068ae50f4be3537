"""An endpoint's live state: requests in flight and the peak-EWMA latency estimate."""

from __future__ import annotations

import math
import threading

import pytest

from resilience._upstream._config import address
from resilience._upstream._endpoints import (
    KEEP,
    PENALTY,
    WARMUP,
    Endpoint,
    decayed,
    peak_ewma,
)


def endpoint(decay: float = 10.0) -> Endpoint:
    return Endpoint(address("e", "http://10.0.0.1:80"), 1.0, None, decay=decay)


def test_peak_is_taken_at_once() -> None:
    """A sample above the estimate replaces it immediately (a slowdown is seen at once)."""
    assert peak_ewma(0.01, 0.0, 0.5, 0.001, 10.0) == 0.5


def test_lower_samples_blend_in_with_time() -> None:
    """A lower sample moves the estimate by 1 - exp(-elapsed / decay) of the difference,
    and by at least 1 - KEEP of it however soon it comes."""
    cost = peak_ewma(0.100, 0.0, 0.010, 5.0, 10.0)
    weight = math.exp(-0.5)
    assert cost == pytest.approx(0.100 * weight + 0.010 * (1 - weight))
    soon = peak_ewma(0.100, 5.0, 0.010, 5.0, 10.0)  # no time passed
    assert soon == pytest.approx(0.100 * KEEP + 0.010 * (1 - KEEP))


def test_estimate_decays_without_samples() -> None:
    """With no new answer the estimate falls to 1/e per decay time: slow endpoints get retried."""
    assert decayed(1.0, 0.0, 10.0, 10.0) == pytest.approx(math.exp(-1))
    assert decayed(1.0, 5.0, 4.0, 10.0) == 1.0  # a clock read before the sample: no decay


def test_start_and_finish_count_in_flight_and_learn() -> None:
    """start() counts an attempt in, finish() out, and feeds its latency in."""
    e = endpoint()
    e.start()
    e.start()
    assert e.in_flight == 2
    e.finish(0.05, now=1.0, ok=True)
    assert e.in_flight == 1
    assert e.cost(1.0) == 0.05
    e.release()
    assert e.in_flight == 0
    assert e.cost(1.0) == 0.05


def test_failures_never_make_an_endpoint_look_faster() -> None:
    """A quick failure does not lower the estimate; a slow one still raises it."""
    e = endpoint()
    e.start()
    e.finish(0.2, now=1.0, ok=True)
    e.start()
    e.finish(0.001, now=30.0, ok=False)
    assert e.cost(1.0) == 0.2  # unchanged (and its stamp unchanged too)
    e.start()
    e.finish(0.9, now=2.0, ok=False)
    assert e.cost(2.0) == 0.9


def test_load_is_cost_times_pending_plus_one() -> None:
    """load = decayed cost x (in flight + 1)."""
    e = endpoint()
    e.start()
    e.finish(0.1, now=0.0, ok=True)
    e.start()
    e.start()
    assert e.load(0.0) == pytest.approx(0.3)


def test_unmeasured_endpoint_is_free_when_idle_and_penalised_when_busy() -> None:
    """Before any answer: load 0 while idle (so it gets measured), PENALTY-sized while busy."""
    e = endpoint()
    assert e.load(0.0) == 0.0
    e.start()
    assert e.load(0.0) >= PENALTY


def test_in_flight_survives_threads() -> None:
    """Concurrent start/finish from many threads lose no update."""
    e = endpoint()
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for i in range(2000):
            e.start()
            e.finish(0.001, now=float(i), ok=True)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert e.in_flight == 0


def test_first_answers_set_the_estimate_directly() -> None:
    """A cold start's slow first answer is forgotten once warm-up answers come in; after
    warm-up, two slow answers in a row are held as the peak."""
    e = endpoint()
    samples = [0.2] + [0.01] * WARMUP
    for i, rtt in enumerate(samples):
        e.start()
        e.finish(rtt, now=float(i) * 0.001, ok=True)
    assert e.cost(0.01) == pytest.approx(0.01, rel=0.01)
    for now in (0.02, 0.021):
        e.start()
        e.finish(0.3, now=now, ok=True)
    assert e.cost(0.021) == pytest.approx(0.3, rel=0.01)


def test_one_odd_answer_is_not_held() -> None:
    """A single slow answer among fast ones (a pause of the client itself) leaves the
    estimate where it was: answers go in through the median of the last three."""
    e = endpoint()
    for i, rtt in enumerate([0.01] * (WARMUP + 2) + [0.5] + [0.01] * 2):
        e.start()
        e.finish(rtt, now=i * 0.001, ok=True)
    assert e.cost(0.01) == pytest.approx(0.01, rel=0.01)


def test_load_counts_only_the_requests_beyond_those_measured() -> None:
    """An endpoint whose answers came with four requests in flight is expected to answer as
    fast with four in flight again; one measured alone costs latency x (in flight + 1)."""
    busy = endpoint()
    for i in range(40):
        busy.start()
        busy.finish(0.01, now=i * 0.001, ok=True, width=4)
    for _ in range(3):
        busy.start()
    assert busy.load(0.04) == pytest.approx(0.01, rel=0.01)
    alone = endpoint()
    alone.start()
    alone.finish(0.01, now=0.0, ok=True)
    for _ in range(3):
        alone.start()
    assert alone.load(0.0) == pytest.approx(0.04)
