"""How an SDK's retry (``x-stainless-retry-count`` > 0) is matched to the call it repeats."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from resilience._http._outer import join

URL = "https://api.example.com/v1/chat/completions"


def _fresh(fn: object) -> object:
    """Run *fn* in an empty context (as a new thread would), return its result."""
    return contextvars.Context().run(fn)  # type: ignore[arg-type]


def test_first_attempt_starts_a_call_and_retries_join_it() -> None:
    """Count 0 starts a call; counts 1 and 2 with the same target join that same call."""

    def run() -> tuple[bool, bool, bool, bool]:
        owner = object()
        first, again0 = join(owner, "POST", URL, "0")
        second, again1 = join(owner, "POST", URL, "1")
        third, again2 = join(owner, "POST", URL, "2")
        return again0, again1 and second is first, again2 and third is first, first.sent == 0

    assert _fresh(run) == (False, True, True, True)


def test_a_new_first_attempt_replaces_the_last_call() -> None:
    """The next call's count 0 starts afresh: its retries never join the call before it."""

    def run() -> bool:
        owner = object()
        before, _ = join(owner, "POST", URL, "0")
        before.key = "old"
        after, _ = join(owner, "POST", URL, "0")
        retry, again = join(owner, "POST", URL, "1")
        return retry is after and again and retry.key is None

    assert _fresh(run)


def test_a_retry_of_another_target_or_transport_is_a_call_of_its_own() -> None:
    """A retry whose method, URL or transport differs from the last call does not join it."""

    def run() -> list[bool]:
        owner = object()
        join(owner, "POST", URL, "0")
        return [
            join(owner, "POST", URL + "?x=1", "1")[1],
            join(owner, "PUT", URL + "?x=1", "1")[1],
            join(object(), "PUT", URL + "?x=1", "1")[1],
        ]

    assert _fresh(run) == [False, False, False]


def test_a_count_that_is_not_a_number_starts_a_call() -> None:
    """A malformed count (``-1``, ``one``, empty) is read as a first attempt."""

    def run() -> list[bool]:
        owner = object()
        join(owner, "POST", URL, "0")
        return [join(owner, "POST", URL, value)[1] for value in ("-1", "one", "", "\uff11")]

    assert _fresh(run) == [False, False, False, False]


def test_threads_do_not_see_each_others_calls() -> None:
    """A retry in one thread never joins a call another thread began."""
    owner = object()
    started = threading.Event()
    seen: list[bool] = []

    def first() -> None:
        join(owner, "POST", URL, "0")
        started.set()

    def retry() -> None:
        seen.append(join(owner, "POST", URL, "1")[1])

    one = threading.Thread(target=first)
    one.start()
    assert started.wait(5)
    one.join(5)
    two = threading.Thread(target=retry)
    two.start()
    two.join(5)
    assert seen == [False]


async def test_concurrent_tasks_keep_their_own_calls() -> None:
    """Two tasks interleaving their attempts each join their own call, never the other's."""
    owner = object()
    gate = asyncio.Event()

    async def call(name: str) -> bool:
        first, _ = join(owner, "POST", URL, "0")
        first.key = name
        await gate.wait()  # both calls have begun before either retries
        retry, again = join(owner, "POST", URL, "1")
        return again and retry.key == name

    tasks = [asyncio.create_task(call(name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [True, True]
