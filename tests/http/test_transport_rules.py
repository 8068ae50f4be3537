"""The pure decisions behind the httpx transports: no I/O, no transport."""

from __future__ import annotations

import math
import threading
from datetime import timedelta

import httpx
import pytest

from resilience import CircuitBreaker, ConfigError, Retry
from resilience._http._core import TransportCore
from resilience._http._hosts import HostBreakers
from resilience._http._overrides import parse_overrides
from resilience._http._rules import (
    DEFAULT_RETRY_STATUSES,
    IDEMPOTENT_METHODS,
    ErrorKinds,
    attempt_timeouts,
    authority,
    budget_cut,
    is_not_sent,
    is_retryable_error,
    parse_retry_after,
)
from resilience.httpx import AsyncResilientTransport, ResilientTransport
from resilience.testing import FakeClock, set_testing

# 2015-10-21 07:28:00 UTC as a Unix time: "now" for the HTTP-date cases.
NOW = 1445412480.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        ("  7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-15 07:29:00 GMT", 60.0),  # obsolete RFC 850
        ("Wed Oct 21 07:28:10 2015", 10.0),  # asctime (no zone: GMT)
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: no wait
        ("9" * 40, math.inf),  # absurd but valid: capped by the caller
    ],
)
def test_retry_after_parses_seconds_and_http_dates(value: str, expected: float) -> None:
    """Retry-After accepts delta-seconds and the three HTTP-date forms."""
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "soon",
        "-5",
        "+5",
        "1.5",
        "\uff15",
        "\u0663",
        "1e3",
        "Wed, 99 Oct 2015 07:28:30 GMT",
        "0x10",
    ],
)
def test_retry_after_garbage_is_ignored(value: str) -> None:
    """A Retry-After that is not ASCII digits or an HTTP-date gives None."""
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
@pytest.mark.parametrize("idempotent", [True, False])
def test_not_sent_errors_are_retryable_for_any_method(
    exc_type: type[Exception], idempotent: bool
) -> None:
    """Errors raised before anything was sent are retryable whatever the method."""
    assert is_retryable_error(exc_type("x"), idempotent)


@pytest.mark.parametrize(
    "exc_type",
    [
        httpx.ReadError,
        httpx.ReadTimeout,
        httpx.WriteError,
        httpx.WriteTimeout,
        httpx.RemoteProtocolError,
    ],
)
def test_maybe_sent_errors_need_idempotency(exc_type: type[Exception]) -> None:
    """Errors after the request may have reached the server: idempotent requests only."""
    assert is_retryable_error(exc_type("x"), idempotent=True)
    assert not is_retryable_error(exc_type("x"), idempotent=False)


class _Reset(httpx.NetworkError):
    """A custom inner transport's own network error."""


class _Stalled(httpx.TimeoutException):
    """A custom inner transport's own timeout."""


class _Refused(httpx.ConnectError):
    """A custom inner transport's own connect error."""


class _SlowPool(httpx.PoolTimeout):
    """A custom inner transport's own pool timeout."""


class _CloseFailed(httpx.CloseError):
    """A custom inner transport's own close error."""


@pytest.mark.parametrize("exc_type", [httpx.NetworkError, httpx.TimeoutException, _Reset, _Stalled])
def test_maybe_sent_errors_are_matched_by_base_class(exc_type: type[Exception]) -> None:
    """httpx's bases and custom subclasses of them count as maybe-sent, like httpx's own."""
    exc = exc_type("x")
    assert is_retryable_error(exc, idempotent=True)
    assert not is_retryable_error(exc, idempotent=False)
    assert not is_not_sent(exc)


@pytest.mark.parametrize("exc_type", [_Refused, _SlowPool])
def test_not_sent_subclasses_stay_not_sent(exc_type: type[Exception]) -> None:
    """A subclass of a connect error or pool timeout still means nothing reached the server."""
    assert is_not_sent(exc_type("x"))
    assert is_retryable_error(exc_type("x"), idempotent=False)


def test_close_errors_are_never_retried_even_subclassed() -> None:
    """CloseError is a NetworkError but the exchange is over: never retried."""
    assert not is_retryable_error(_CloseFailed("x"), idempotent=True)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.LocalProtocolError("x"),
        httpx.UnsupportedProtocol("x"),
        httpx.ProxyError("x"),
        httpx.CloseError("x"),
        ValueError("x"),
        httpx.DecodingError("x"),
    ],
)
def test_other_errors_are_never_retryable(exc: Exception) -> None:
    """Caller mistakes, proxy and close errors and non-transport errors are not retried."""
    assert not is_retryable_error(exc, idempotent=True)


def test_idempotent_methods_and_statuses_are_the_documented_ones() -> None:
    """The defaults match API.md: six idempotent methods and 429/502/503/504."""
    assert {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"} == IDEMPOTENT_METHODS
    assert {429, 502, 503, 504} == DEFAULT_RETRY_STATUSES


def test_attempt_timeouts_cap_every_part_and_fill_none() -> None:
    """Each httpx timeout becomes at most the limit; None (no timeout) becomes the limit."""
    given = {"connect": 0.2, "read": None, "write": 5.0, "pool": 1.0}
    everywhere = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}
    assert attempt_timeouts(given, None, 0.5)[0] == {
        "connect": 0.2,
        "read": 0.5,
        "write": 0.5,
        "pool": 0.5,
    }
    assert attempt_timeouts(given, 0.5, None)[0] == attempt_timeouts(given, None, 0.5)[0]
    assert attempt_timeouts(None, None, 2.0)[0] == everywhere
    assert attempt_timeouts(None, 2.0, None)[0] == everywhere


def test_attempt_timeouts_name_the_parts_only_the_deadline_shortened() -> None:
    """A part is the deadline's cut only when the budget is below the transport's own value."""
    given = {"connect": 0.2, "read": None, "write": 5.0, "pool": 1.0}
    assert attempt_timeouts(given, None, 0.5)[1] == ("read", "write", "pool")
    # attempt_timeout (the cap) is the transport's own setting: below the budget, no cut.
    assert attempt_timeouts(given, 0.3, 0.5)[1] == ()
    assert attempt_timeouts(given, 0.8, 0.5)[1] == ("read", "write", "pool")
    assert attempt_timeouts(given, None, 5.0)[1] == ("read",)
    assert attempt_timeouts(given, 1.0, None)[1] == ()


@pytest.mark.parametrize(
    ("exc", "cut", "expected"),
    [
        (httpx.ReadTimeout("x"), ("read",), True),
        (httpx.ReadTimeout("x"), ("connect", "write", "pool"), False),
        (httpx.ConnectTimeout("x"), ("connect",), True),
        (httpx.WriteTimeout("x"), ("read",), False),
        (httpx.PoolTimeout("x"), ("pool",), True),
        (httpx.TimeoutException("x"), ("write",), True),  # phase unknown: any cut part
        (httpx.TimeoutException("x"), (), False),
        (httpx.ReadError("x"), ("read",), False),  # not a timeout
    ],
)
def test_budget_cut_matches_the_timeout_to_its_part(
    exc: Exception, cut: tuple[str, ...], expected: bool
) -> None:
    """A timeout is the caller's budget only when its own part was shortened by the deadline."""
    assert budget_cut(exc, cut) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/x", "https://api.example.com:443"),
        ("http://api.example.com/x", "http://api.example.com:80"),
        ("http://API.Example.com:8080/x?token=secret", "http://api.example.com:8080"),
        ("https://user:password@api.example.com/", "https://api.example.com:443"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
    ],
)
def test_authority_is_scheme_host_port_without_secrets(url: str, expected: str) -> None:
    """The breaker key spells out the port and drops credentials, path and query."""
    assert authority(httpx.URL(url)) == expected


def test_overrides_parse_the_documented_keys() -> None:
    """retry=False, attempts and idempotent are read from the extension."""
    assert parse_overrides({"retry": False}).no_retry
    assert parse_overrides({"retry": None}).no_retry
    custom = Retry(on=ValueError, attempts=7)
    assert parse_overrides({"retry": custom}).retry is custom
    assert parse_overrides({"attempts": 5}).attempts == 5
    assert parse_overrides({"idempotent": True}).idempotent is True
    parsed = parse_overrides({"attempts": 2})
    assert parse_overrides(parsed) is parsed
    assert "attempts=2" in repr(parsed)


@pytest.mark.parametrize(
    "value",
    [
        {"atempts": 3},
        {"attempts": 0},
        {"attempts": "3"},
        {"idempotent": "yes"},
        {"retry": True},
        "retry=False",
    ],
)
def test_overrides_reject_malformed_values(value: object) -> None:
    """A malformed extension raises ConfigError naming the key."""
    with pytest.raises(ConfigError, match="resilience"):
        parse_overrides(value)


def test_host_breakers_are_bounded_lru() -> None:
    """Beyond max_hosts the least recently used host's breaker is dropped."""
    hosts = HostBreakers("lru", lambda name: CircuitBreaker(name), max_hosts=2)
    a = hosts.get(httpx.URL("https://a.test/"))
    hosts.get(httpx.URL("https://b.test/"))
    assert hosts.get(httpx.URL("https://a.test/other")) is a  # a is now the most recent
    hosts.get(httpx.URL("https://c.test/"))
    assert set(hosts.by_authority()) == {"https://a.test:443", "https://c.test:443"}
    assert a.name == "lru:https://a.test:443"


def test_host_breakers_keep_the_lru_order_when_one_host_repeats() -> None:
    """A host asked for over and over (answered from the last lookup) stays the most
    recent; one evicted meanwhile gets a new breaker, even right after being the last."""
    hosts = HostBreakers("repeat", lambda name: CircuitBreaker(name), max_hosts=2)

    def url(host: str) -> httpx.URL:
        return httpx.URL(f"https://{host}.test/")

    for host in ["a", "b", "b", "a", "a", "a", "c"]:
        hosts.get(url(host))
    assert set(hosts.by_authority()) == {"https://a.test:443", "https://c.test:443"}

    one = HostBreakers("one", lambda name: CircuitBreaker(name), max_hosts=1)
    first = one.get(url("a"))
    assert one.get(url("a")) is first
    one.get(url("b"))
    assert list(one.by_authority()) == ["https://b.test:443"]
    again = one.get(url("a"))
    assert again is not first  # a was evicted: its breaker is gone with it
    assert list(one.by_authority()) == ["https://a.test:443"]
    assert one.get(httpx.URL("http://a.test/")) is not again  # another scheme, another host
    assert one.get(httpx.URL("https://a.test:8443/")) is not again  # another port too


def test_host_breakers_make_one_breaker_per_host_under_threads() -> None:
    """Many threads asking for the same host all get the same breaker."""
    hosts = HostBreakers("threads", lambda name: CircuitBreaker(name), max_hosts=8)
    seen: list[CircuitBreaker] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        seen.extend(hosts.get(httpx.URL("https://same.test/")) for _ in range(200))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(b) for b in seen}) == 1


def test_breaker_map_lookups_accept_urls_and_default_ports() -> None:
    """transport.breakers can be read with the authority, a URL or scheme://host."""
    transport = ResilientTransport()
    view = transport.breakers  # a live view: hosts seen later show up
    assert len(view) == 0
    breaker = transport._core.hosts.get(httpx.URL("https://api.test/x"))  # type: ignore[union-attr]  # default has hosts
    assert view["https://api.test:443"] is breaker
    assert view["https://api.test"] is breaker
    assert view[httpx.URL("https://api.test/y")] is breaker  # type: ignore[index]  # URL lookups too
    assert "http://api.test" not in view
    assert view["api.test:443"] is breaker
    assert view["api.test"] is breaker
    assert "other.test" not in view
    assert "http://[bad" not in view
    assert 42 not in view
    assert list(view) == ["https://api.test:443"]
    assert len(view) == 1
    assert "closed" in repr(view)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_retry_after", -1),
        ("max_retry_after", "60"),
        ("buffer_limit", -1),
        ("buffer_limit", 1.5),
        ("max_hosts", 0),
        ("deadline_header", ""),
        ("idempotency_keys", "yes"),
        ("idempotency_keys", str),
        ("retry_statuses", {200, 1000}),
        ("retry_statuses", [503]),
        ("clock", 3),
        ("sleep", 3),
        ("policy", "payments"),
    ],
)
@pytest.mark.parametrize("transport_type", [ResilientTransport, AsyncResilientTransport])
def test_invalid_settings_fail_at_construction(
    transport_type: type[ResilientTransport], option: str, value: object
) -> None:
    """Bad options raise ConfigError naming the option and the value."""
    with pytest.raises(ConfigError, match=option):
        transport_type(**{option: value})  # type: ignore[arg-type]  # invalid on purpose


def test_inner_of_the_wrong_kind_is_rejected() -> None:
    """A sync transport given to the async twin (or the reverse) fails at construction."""
    with pytest.raises(ConfigError, match="inner"):
        ResilientTransport(httpx.AsyncHTTPTransport())  # type: ignore[arg-type]  # on purpose
    with pytest.raises(ConfigError, match="inner"):
        AsyncResilientTransport(httpx.HTTPTransport())  # type: ignore[arg-type]  # on purpose


def test_durations_accept_timedelta() -> None:
    """max_retry_after takes a timedelta like every duration."""
    transport = ResilientTransport(max_retry_after=timedelta(seconds=5), clock=FakeClock())
    assert transport._core.max_retry_after == 5.0


def test_idempotency_key_function_needing_arguments_is_refused() -> None:
    """idempotency_keys is called with nothing; one that needs an argument fails at once."""
    with pytest.raises(ConfigError, match=r"^idempotency_keys must take no arguments, got "):
        ResilientTransport(idempotency_keys=lambda request: "k")  # type: ignore[arg-type,misc]


class Refused(Exception):
    """Another client library's "connection refused"."""


class Dropped(Exception):
    """Another client library's "connection dropped after sending"."""


def test_core_classifies_errors_by_the_kinds_it_is_given() -> None:
    """A core built with another client's ErrorKinds applies the HTTP rules to its errors."""
    kinds = ErrorKinds(
        not_sent=(Refused,),
        maybe_sent=(Dropped,),
        never_retried=(),
        caller_errors=(),
        transport=(Refused, Dropped),
        timeout=(),
        timeout_phases=(),
    )
    core = TransportCore(
        policy=None,
        idempotency_keys=False,
        max_retry_after=60.0,
        buffer_limit=0,
        deadline_header=None,
        max_hosts=8,
        retry_statuses=DEFAULT_RETRY_STATUSES,
        clock=FakeClock(),
        wall_clock=lambda: 0.0,
        errors=kinds,
    )

    def first_verdict(method: str, exc: Exception) -> float | None:
        call = core.begin(httpx.Request(method, "https://other-client.test/x"))
        core.before_attempt(call)
        return core.after_error(call, exc)

    with set_testing(True):
        assert first_verdict("POST", Refused()) == 0.0  # nothing sent: any method again
        assert first_verdict("POST", Dropped()) is None  # maybe sent: a POST is not repeated
        assert first_verdict("GET", Dropped()) == 0.0
        assert first_verdict("GET", httpx.ConnectError("x")) is None  # not this client's
