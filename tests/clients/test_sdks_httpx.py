"""LLM SDKs that still take an `httpx` client, through `resilience.httpx`, against a fake API.

openai 3.x accepts a legacy `httpx.Client` besides `httpx2.Client`; google-genai takes
either through ``HttpOptions(httpx_client=...)``. (anthropic 2.x refuses httpx objects: it
is covered with `resilience.httpx2`.) The SDK's own retries are off (``max_retries=0``), as
docs/sdks.md recommends, so every attempt the server records is ours.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import openai
import pytest
from google import genai
from openai.types.chat import ChatCompletionMessageParam

from resilience.httpx import ResilientTransport
from tests.helpers import FakeLLM, serve_llm

pytestmark = pytest.mark.network

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def llm() -> Iterator[tuple[str, FakeLLM]]:
    """A fake LLM API on 127.0.0.1, streaming 4 chunks 0.4 s apart."""
    with serve_llm(FakeLLM(chunk_delay=0.4)) as served:
        yield served


@pytest.fixture
def clients() -> Iterator[ExitStack]:
    """Closes the HTTP clients a test made (their pooled sockets) when it ends."""
    with ExitStack() as stack:
        yield stack


def _client(clients: ExitStack, transport: ResilientTransport) -> httpx.Client:
    return clients.enter_context(httpx.Client(transport=transport, timeout=10.0))


def _openai(clients: ExitStack, url: str, transport: ResilientTransport) -> openai.OpenAI:
    client = _client(clients, transport)
    # openai 3.x takes a legacy httpx.Client at run time; its annotation names only httpx2's.
    return openai.OpenAI(
        api_key="sk-test",
        base_url=f"{url}/v1",
        http_client=client,  # type: ignore[arg-type]
        max_retries=0,
    )


def test_openai_retry_after_is_honoured_by_the_transport(
    llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """A 429 with Retry-After: 2 is retried once after 2 s, and the SDK sees the answer."""
    url, fake = llm
    waits: list[float] = []
    fake.script("429:2")
    sdk = _openai(clients, url, ResilientTransport(idempotency_keys=True, sleep=waits.append))
    answer = sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello from the fake model."
    assert len(fake.attempts) == 2
    assert waits == [2.0]


def test_openai_keeps_one_idempotency_key_across_our_retries(
    llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """With idempotency_keys=True, a POST answered 503 twice is retried under one key."""
    url, fake = llm
    fake.script("503", "503")
    sdk = _openai(clients, url, ResilientTransport(idempotency_keys=True, sleep=lambda s: None))
    sdk.chat.completions.create(model="m", messages=MESSAGES)
    keys = fake.keys()
    assert len(keys) == 3
    assert keys[0] is not None
    assert len(set(keys)) == 1


def test_openai_body_cut_mid_way_is_retried_when_keyed(
    llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """A connection closed mid-body is retried inside the transport for a keyed POST."""
    url, fake = llm
    fake.script("cut")
    sdk = _openai(clients, url, ResilientTransport(idempotency_keys=True, sleep=lambda s: None))
    answer = sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello from the fake model."
    assert len(fake.attempts) == 2


def test_openai_unkeyed_post_is_not_sent_twice_after_a_cut(
    llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """Without a key, a POST whose answer broke is not repeated: the server may have acted."""
    url, fake = llm
    fake.script("cut")
    sdk = _openai(clients, url, ResilientTransport(sleep=lambda s: None))
    with pytest.raises(openai.APIConnectionError):
        sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert len(fake.attempts) == 1


def test_openai_stream_first_chunk_is_not_held_back(
    llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """A streamed answer (no Content-Length) reaches the SDK chunk by chunk, not at the end."""
    url, fake = llm
    sdk = _openai(clients, url, ResilientTransport(idempotency_keys=True))
    started = time.monotonic()
    stream = sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    arrivals = [
        time.monotonic() - started
        for chunk in stream
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(arrivals) == fake.chunks
    # The chunks leave the server 0.4 s apart: the first arrives long before the last.
    assert arrivals[0] + 0.8 < arrivals[-1]


def _gemini(clients: ExitStack, url: str, transport: ResilientTransport) -> genai.Client:
    options = genai.types.HttpOptions(base_url=url, httpx_client=_client(clients, transport))
    return genai.Client(api_key="test-key", http_options=options)


def test_gemini_retries_under_one_key(llm: tuple[str, FakeLLM], clients: ExitStack) -> None:
    """google-genai through our transport: a 503 then a 429 are retried under one key."""
    url, fake = llm
    waits: list[float] = []
    fake.script("503", "429:1")
    sdk = _gemini(clients, url, ResilientTransport(idempotency_keys=True, sleep=waits.append))
    answer = sdk.models.generate_content(model="gemini-test", contents="hi")
    assert answer.text == "Hello from the fake model."
    assert [a.api for a in fake.attempts] == ["gemini"] * 3
    assert len(set(fake.keys())) == 1
    assert waits[1] >= 1.0


def test_gemini_stream_first_chunk_is_not_held_back(
    llm: tuple[str, FakeLLM], clients: ExitStack
) -> None:
    """google-genai's streamed answer reaches it chunk by chunk through our transport."""
    url, fake = llm
    sdk = _gemini(clients, url, ResilientTransport())
    started = time.monotonic()
    arrivals = [
        time.monotonic() - started
        for _ in sdk.models.generate_content_stream(model="gemini-test", contents="hi")
    ]
    assert len(arrivals) == fake.chunks
    assert arrivals[0] + 0.8 < arrivals[-1]
