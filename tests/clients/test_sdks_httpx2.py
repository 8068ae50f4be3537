"""The current LLM SDKs (anthropic 2.x, openai 3.x, google-genai) through resilience.httpx2.

Against the fake LLM API on uvicorn: the recipe (``max_retries=0`` and our transport)
honours a 429 once and keeps one key per call; with the SDK's own retries left on, its
attempts and ours add up instead of multiplying (5, not 3 x 3 = 9) and the call keeps
one key (it had one per SDK attempt before). The SDKs' own waits are kept to 1 ms by the
fake API's ``retry-after-ms``; ours are recorded instead of slept.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from google import genai

from resilience.httpx2 import AsyncResilientTransport, ResilientTransport
from tests.helpers import FakeLLM, serve_llm

pytestmark = pytest.mark.network

SDKS = ["anthropic", "openai"]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakeLLM]]:
    """One fake API for the module (streams 4 chunks 0.4 s apart; SDK waits of 1 ms)."""
    with serve_llm(FakeLLM(chunk_delay=0.4, retry_after_ms=1)) as pair:
        yield pair


@pytest.fixture
def llm(served: tuple[str, FakeLLM]) -> tuple[str, FakeLLM]:
    """The module's fake API, reset."""
    served[1].reset()
    return served


@pytest.fixture
def clients() -> Iterator[ExitStack]:
    """Closes the HTTP clients a test made when it ends."""
    with ExitStack() as stack:
        yield stack


class Counting(httpx2.HTTPTransport):
    """httpx2's transport, counting what it sends (refused connections included)."""

    sends = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sends += 1
        return super().handle_request(request)


def _ask(
    sdk: str, clients: ExitStack, url: str, transport: Any, max_retries: int
) -> Callable[..., Any]:
    """A function making one call of *sdk* through *transport* (stream=True streams)."""
    http = clients.enter_context(httpx2.Client(transport=transport, timeout=10.0))
    messages: Any = [{"role": "user", "content": "hi"}]
    if sdk == "anthropic":
        claude = anthropic.Anthropic(
            api_key="sk-test", base_url=url, http_client=http, max_retries=max_retries
        )
        return lambda stream=False: claude.messages.create(
            model="m", max_tokens=16, messages=messages, stream=stream
        )
    gpt = openai.OpenAI(
        api_key="sk-test", base_url=f"{url}/v1", http_client=http, max_retries=max_retries
    )
    return lambda stream=False: gpt.chat.completions.create(
        model="m", messages=messages, stream=stream
    )


def _text(sdk: str, answer: Any) -> str:
    if sdk == "anthropic":
        return str(answer.content[0].text)
    return str(answer.choices[0].message.content)


@pytest.mark.parametrize("sdk", SDKS)
def test_recipe_honours_a_429_once(sdk: str, llm: tuple[str, FakeLLM], clients: ExitStack) -> None:
    """max_retries=0 + our transport: a 429 (Retry-After: 2) waits 2 s once, then answers."""
    url, fake = llm
    waits: list[float] = []
    fake.script("429:2")
    transport = ResilientTransport(idempotency_keys=True, sleep=waits.append)
    answer = _ask(sdk, clients, url, transport, max_retries=0)()
    assert _text(sdk, answer) == "Hello from the fake model."
    assert waits == [2.0]
    keys = fake.keys()
    assert len(keys) == 2
    assert keys[0] is not None
    assert len(set(keys)) == 1


@pytest.mark.parametrize("sdk", SDKS)
def test_sdk_retries_on_add_up_instead_of_multiplying(
    sdk: str, llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """SDK retries left on (2) over ours (3 attempts), 503 every time: 5 attempts, one key."""
    url, fake = llm
    fake.script(*["503"] * 12)
    transport = ResilientTransport(idempotency_keys=True, sleep=lambda seconds: None)
    with pytest.raises((anthropic.APIStatusError, openai.APIStatusError)):
        _ask(sdk, clients, url, transport, max_retries=2)()
    assert [a.retry_count for a in fake.attempts] == ["0", "0", "0", "1", "2"]
    assert len(set(fake.keys())) == 1


@pytest.mark.parametrize("sdk", SDKS)
def test_refused_connection_with_sdk_retries_on_is_not_multiplied(
    sdk: str, llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """Nothing listening, SDK retries on: 3 + 1 + 1 connection attempts, not 9."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    inner = Counting()
    transport = ResilientTransport(inner, sleep=lambda seconds: None)
    with pytest.raises((anthropic.APIConnectionError, openai.APIConnectionError)):
        _ask(sdk, clients, dead, transport, max_retries=2)()
    assert inner.sends == 5


@pytest.mark.parametrize("sdk", SDKS)
def test_body_cut_mid_way_is_retried_under_the_calls_key(
    sdk: str, llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """The recipe: an answer cut mid-body is retried by the transport, with the same key."""
    url, fake = llm
    fake.script("cut")
    transport = ResilientTransport(idempotency_keys=True, sleep=lambda seconds: None)
    answer = _ask(sdk, clients, url, transport, max_retries=0)()
    assert _text(sdk, answer) == "Hello from the fake model."
    assert len(fake.attempts) == 2
    assert len(set(fake.keys())) == 1


@pytest.mark.parametrize("sdk", SDKS)
def test_streamed_answer_is_not_held_back(
    sdk: str, llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """Server-sent events reach the SDK as they come: the first long before the last."""
    url, fake = llm
    call = _ask(sdk, clients, url, ResilientTransport(idempotency_keys=True), max_retries=0)
    started = time.monotonic()
    arrivals = [time.monotonic() - started for _ in call(stream=True)]
    assert len(arrivals) >= fake.chunks
    # The chunks leave the server 0.4 s apart: 1.2 s from the first to the last.
    assert arrivals[0] + 0.8 < arrivals[-1]


async def test_async_calls_with_sdk_retries_keep_one_key_each(llm: tuple[str, FakeLLM]) -> None:
    """Two concurrent AsyncAnthropic calls, SDK retries on, 503s: 5 attempts and a key each."""
    url, fake = llm
    fake.script(*["503"] * 20)

    async def no_wait(seconds: float) -> None:
        """Our waits are not slept."""

    transport = AsyncResilientTransport(idempotency_keys=True, sleep=no_wait)
    async with httpx2.AsyncClient(transport=transport, timeout=10.0) as http:
        claude = anthropic.AsyncAnthropic(
            api_key="sk-test", base_url=url, http_client=http, max_retries=2
        )

        async def call() -> None:
            with pytest.raises(anthropic.APIStatusError):
                await claude.messages.create(
                    model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
                )

        await asyncio.gather(call(), call())
    keys = fake.keys()
    assert len(keys) == 10
    assert sorted(keys.count(key) for key in set(keys)) == [5, 5]


def test_gemini_through_httpx2_retries_under_one_key(
    llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """google-genai with an httpx2 client: a 503 is retried by the transport, one key."""
    url, fake = llm
    fake.script("503")
    transport = ResilientTransport(idempotency_keys=True, sleep=lambda seconds: None)
    http = clients.enter_context(httpx2.Client(transport=transport, timeout=10.0))
    gemini = genai.Client(
        api_key="test-key", http_options=genai.types.HttpOptions(base_url=url, httpx_client=http)
    )
    answer = gemini.models.generate_content(model="gemini-test", contents="hi")
    assert answer.text == "Hello from the fake model."
    assert len(fake.attempts) == 2
    assert len(set(fake.keys())) == 1
