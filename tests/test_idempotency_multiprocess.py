"""Idempotency across real processes: two uvicorn servers sharing one Redis, and a fault
campaign against a server run under libfiu's fiu-run (its send()/recv() fail at random).

The servers are bench/_idemserver.py; each run of the side effect is a line in a file, so the
test counts the runs of every key whatever happened on the network.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator

import httpx
import pytest

from bench._idemserver import IdemServer, fiu_available, read_effects
from tests.helpers_idempotency import redis_prefix, redis_up

pytestmark = [
    pytest.mark.network,
    pytest.mark.redis,
    pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379"),
]


@pytest.fixture(scope="module")
def two_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[IdemServer, IdemServer]]:
    """Two server processes on one Redis prefix and one effects file; handlers take 0.5 s.

    Shared by the module's tests (each uses keys of its own): starting them takes seconds.
    """
    effects = tmp_path_factory.mktemp("idem") / "effects.txt"
    with (
        redis_prefix() as prefix,
        IdemServer(prefix, effects, delay=0.5, max_seconds=120) as first,
        IdemServer(prefix, effects, delay=0.5, max_seconds=120) as second,
    ):
        yield first, second


def test_fifty_concurrent_requests_on_two_processes_run_once(
    two_servers: tuple[IdemServer, IdemServer],
) -> None:
    """50 concurrent POSTs with one key, spread over two processes: exactly one run; the
    others are 409 (still running) or a replay of the one response."""
    first, second = two_servers
    assert httpx.get(first.url + "health").json() != httpx.get(second.url + "health").json()
    headers = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}

    def post(i: int) -> httpx.Response:
        url = (first, second)[i % 2].url + "effect"
        return httpx.post(url, json={"sku": 1}, headers=headers, timeout=10)

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(post, range(50)))
    assert read_effects(first.effects)[headers["Idempotency-Key"]] == 1
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, statuses
    originals = [
        r for r in responses if r.status_code == 200 and "idempotent-replayed" not in r.headers
    ]
    assert len(originals) == 1
    replays = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    assert all(r.content == originals[0].content for r in replays)
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses if r.status_code == 409)
    for server in (first, second):  # afterwards, both processes replay the same response
        again = httpx.post(server.url + "effect", json={"sku": 1}, headers=headers, timeout=10)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == originals[0].content
    assert read_effects(first.effects)[headers["Idempotency-Key"]] == 1


def test_a_crash_in_one_process_frees_the_key_for_the_other(
    two_servers: tuple[IdemServer, IdemServer],
) -> None:
    """The first run crashes (500) in one process: the retry runs in the other, then replays."""
    first, second = two_servers
    key = f"flaky-{uuid.uuid4().hex}"
    headers = {"Idempotency-Key": key}
    assert httpx.post(first.url + "flaky", headers=headers, timeout=10).status_code == 500
    retried = httpx.post(second.url + "flaky", headers=headers, timeout=10)
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    replay = httpx.post(first.url + "flaky", headers=headers, timeout=10)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == retried.json()
    assert read_effects(first.effects)[key] == 2  # the crashed run and the successful one


def test_a_different_request_with_a_used_key_is_422_in_the_other_process(
    two_servers: tuple[IdemServer, IdemServer],
) -> None:
    """The fingerprint is shared too: another body with the key is 422 in any process."""
    first, second = two_servers
    headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    assert httpx.post(first.url + "effect", json={"a": 1}, headers=headers).status_code == 200
    assert httpx.post(second.url + "effect", json={"a": 2}, headers=headers).status_code == 422


@pytest.mark.skipif(not fiu_available(), reason="fiu-run is not installed (fiu-utils)")
def test_fault_campaign_no_effect_runs_twice() -> None:
    """200 keyed POSTs from our retrying client to a server whose send()/recv() fail 2 % of
    the time (clients' sockets and Redis's alike): every POST the client saw succeed ran
    exactly once, no key ran twice, and retries after lost responses got replays."""
    from bench.case_idempotency import run_campaign

    result = run_campaign(200, faults=0.02, workers=4)
    assert result.keys_run_twice == 0, result.runs.most_common(3)
    assert result.successes_not_run_once == 0
    assert result.succeeded >= 150, result.failures  # the faults must not win outright
    assert sum(result.runs.values()) >= result.succeeded
