"""What is particular to `resilience.requests.ResilientAdapter` (the shared rules are in
test_behaviour_table.py): requests' bodies, its wrapped urllib3 errors, its reading."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import requests
import urllib3.exceptions as u3
from requests import exceptions as rx
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from resilience import ConfigError
from resilience._http._requests_io import REQUESTS_ERRORS, base_timeouts
from resilience.requests import ResilientAdapter
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


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A session with our adapter on http:// (waits recorded on the adapter, not slept)."""
    with requests.Session() as http:
        http.mount("http://", ResilientAdapter(sleep=lambda seconds: None))
        yield http


def test_urllib3_retries_are_off() -> None:
    """The adapter does the retrying: urllib3 under it makes no attempt of its own."""
    adapter = ResilientAdapter()
    assert adapter.max_retries.total == 0
    assert adapter.max_retries.read is False


def test_a_file_body_with_a_length_is_read_and_replayed(
    llm: tuple[str, FakeLLM], session: requests.Session
) -> None:
    """A PUT of a file answered 503 is sent again with the whole body (read first)."""
    url, fake = llm
    fake.script("503")
    body = io.BytesIO(b"x" * 1000)
    response = session.put(url + PATH, data=body, headers={"Content-Length": "1000"})
    assert response.status_code == 200
    assert [attempt.body for attempt in fake.attempts] == [b"x" * 1000] * 2


def test_a_generator_body_is_sent_once(llm: tuple[str, FakeLLM], session: requests.Session) -> None:
    """A streamed (generator) body cannot be replayed: a PUT answered 503 is sent once."""
    url, fake = llm
    fake.script("503")
    response = session.put(url + PATH, data=(chunk for chunk in [b"a", b"b"]))
    assert response.status_code == 503
    assert [attempt.body for attempt in fake.attempts] == [b"ab"]


def test_a_small_body_read_inside_still_streams_to_the_caller(
    llm: tuple[str, FakeLLM], session: requests.Session
) -> None:
    """With stream=True, a body the adapter read stays readable chunk by chunk and as JSON."""
    url, _ = llm
    response = session.get(url + PATH, stream=True)
    assert b"".join(response.iter_content(7)) == response.content
    assert response.json()["object"] == "chat.completion"


def test_an_unsized_body_streams_through(
    llm: tuple[str, FakeLLM], session: requests.Session
) -> None:
    """A streamed answer (no Content-Length) is not read by the adapter."""
    url, fake = llm
    response = session.post(url + PATH, json={"stream": True}, stream=True)
    assert response.raw is not None
    assert not response.raw.closed  # still on the wire for the caller
    lines = [line for line in response.iter_lines() if line.startswith(b"data:")]
    assert len(lines) >= fake.chunks


def test_wrapped_urllib3_errors_are_sorted_by_whether_anything_was_sent() -> None:
    """Refused: not sent; aborted mid-answer or a read timeout in the body: maybe sent."""
    pool = HTTPConnectionPool("127.0.0.1", 1)
    refused = rx.ConnectionError(
        u3.MaxRetryError(
            pool, "/", u3.NewConnectionError(HTTPConnection("127.0.0.1", 1), "refused")
        )
    )
    aborted = rx.ConnectionError(u3.ProtocolError("Connection aborted."))
    body_timeout = rx.ConnectionError(u3.ReadTimeoutError(pool, "/", "read timed out"))
    kinds = REQUESTS_ERRORS
    assert isinstance(refused, kinds.not_sent)
    assert isinstance(rx.ConnectTimeout(), kinds.not_sent)
    assert not isinstance(aborted, kinds.not_sent)
    assert isinstance(aborted, kinds.maybe_sent)
    assert not isinstance(body_timeout, kinds.not_sent)
    assert isinstance(body_timeout, kinds.timeout)
    assert not isinstance(rx.InvalidURL(), kinds.not_sent)
    assert isinstance(rx.InvalidURL(), kinds.caller_errors)


def test_requests_timeouts_become_the_cores_parts() -> None:
    """A float, a (connect, read) pair or None: the parts the deadline clamps."""
    assert base_timeouts(None) is None
    assert base_timeouts(2) == {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": None}
    assert base_timeouts((1, None)) == {"connect": 1.0, "read": None, "write": None, "pool": None}


def test_bad_settings_are_config_errors() -> None:
    """The adapter validates its options like the transports do."""
    with pytest.raises(ConfigError, match="max_hosts"):
        ResilientAdapter(max_hosts=0)
    with pytest.raises(ConfigError, match="sleep"):
        ResilientAdapter(sleep=3)  # type: ignore[arg-type]
