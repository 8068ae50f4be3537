"""What is particular to `resilience.aiohttp.middleware` (the shared rules are in
test_behaviour_table.py): aiohttp's payloads, the attempt cap, bodies read inside, and
Google Gen AI's async client, which uses aiohttp."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from google import genai

from resilience import CircuitBreaker, ConfigError, Policy, Retry, backoff
from resilience.aiohttp import middleware
from tests.helpers import FakeLLM, serve_llm

pytestmark = pytest.mark.network

PATH = "/v1/chat/completions"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakeLLM]]:
    """One fake API for the module."""
    with serve_llm(FakeLLM(chunk_delay=0.05)) as pair:
        yield pair


@pytest.fixture
def llm(served: tuple[str, FakeLLM]) -> tuple[str, FakeLLM]:
    """The module's fake API, reset."""
    served[1].reset()
    return served


async def _no_wait(seconds: float) -> None:
    """Our waits are not slept: the tests count attempts."""


async def test_an_async_iterable_body_is_sent_once(llm: tuple[str, FakeLLM]) -> None:
    """A streamed request body cannot be replayed: a PUT answered 503 is sent once."""
    url, fake = llm
    fake.script("503")

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    async with (
        aiohttp.ClientSession(middlewares=(middleware(sleep=_no_wait),)) as http,
        http.put(url + PATH, data=body()) as response,
    ):
        assert response.status == 503
    assert [attempt.body for attempt in fake.attempts] == [b"ab"]


async def test_a_bytes_body_is_replayed_whole(llm: tuple[str, FakeLLM]) -> None:
    """A PUT of bytes answered 503 is sent again with the same body."""
    url, fake = llm
    fake.script("503")
    async with (
        aiohttp.ClientSession(middlewares=(middleware(sleep=_no_wait),)) as http,
        http.put(url + PATH, data=b"x" * 500) as response,
    ):
        assert response.status == 200
        assert (await response.json())["object"] == "chat.completion"
    assert [attempt.body for attempt in fake.attempts] == [b"x" * 500] * 2


async def test_attempt_timeout_caps_each_attempt_and_counts_against_the_host(
    llm: tuple[str, FakeLLM],
) -> None:
    """attempt_timeout=0.3: a 5 s answer is cut, counted as the host's failure, retried."""
    url, fake = llm
    fake.script("sleep:5")
    ours = middleware(
        policy=Policy(
            attempt_timeout=0.3,
            retry=Retry(on=(), attempts=2, backoff=backoff.none()),
            breaker=CircuitBreaker("aio-cap"),
        )
    )
    async with (
        aiohttp.ClientSession(middlewares=(ours,)) as http,
        http.get(url + PATH) as response,
    ):
        assert response.status == 200
    assert len(fake.attempts) == 2
    assert ours.breakers[url].metrics().failures == 1


async def test_bad_settings_are_config_errors() -> None:
    """The middleware validates its options like the transports do."""
    with pytest.raises(ConfigError, match="buffer_limit"):
        middleware(buffer_limit=-1)


async def test_gemini_async_client_through_the_middleware(llm: tuple[str, FakeLLM]) -> None:
    """google-genai's async client on an aiohttp session with our middleware: one key."""
    url, fake = llm
    fake.script("503")
    async with aiohttp.ClientSession(
        middlewares=(middleware(idempotency_keys=True, sleep=_no_wait),)
    ) as http:
        gemini = genai.Client(
            api_key="test-key",
            http_options=genai.types.HttpOptions(base_url=url, aiohttp_client=http),
        )
        answer = await gemini.aio.models.generate_content(model="gemini-test", contents="hi")
    assert answer.text == "Hello from the fake model."
    assert len(fake.attempts) == 2
    assert len(set(fake.keys())) == 1
