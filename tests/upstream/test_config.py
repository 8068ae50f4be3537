"""Upstream settings: what is accepted, how it is normalised, and the ConfigErrors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from resilience import ConfigError
from resilience._upstream._config import MAX_ENDPOINTS, Upstream, address, is_async_only


def test_defaults_match_the_contract() -> None:
    """refresh 30 s, least_request, 50 % ejection cap, 50 % panic threshold, no weights."""
    up = Upstream("payments", endpoints=["http://127.0.0.1:8001"])
    assert up.refresh == 30.0
    assert up.balancer == "least_request"
    assert up.max_ejection_percent == 50
    assert up.panic_threshold == 50
    assert up.weights is None
    assert up.resolver is None


def test_endpoints_are_normalised_and_deduplicated() -> None:
    """Case, trailing slash and default ports are normalised; repeats are dropped."""
    up = Upstream(
        "Payments",
        endpoints=[
            "HTTP://127.0.0.1:8001/",
            "http://127.0.0.1:8001",
            "https://api.test",
            "http://[::1]",
        ],
    )
    assert up.name == "payments"
    assert up.endpoints == (
        "http://127.0.0.1:8001",
        "https://api.test:443",
        "http://[::1]:80",
    )
    assert [a.port for a in up.addresses] == [8001, None, None]
    assert up.addresses[2].host == "::1"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("127.0.0.1:8001", "http:// or https://"),
        ("ftp://127.0.0.1", "http:// or https://"),
        ("http://user:pw@10.0.0.1", "without credentials"),
        ("http://10.0.0.1/api", "without path"),
        ("http://10.0.0.1?x=1", "without path"),
        ("http://10.0.0.1:99999", "valid URL"),
        (8001, "a URL string"),
    ],
)
def test_bad_endpoint_names_the_entry(url: object, why: str) -> None:
    """Each bad endpoint URL is a ConfigError naming its index, the value and what is wanted."""
    with pytest.raises(ConfigError, match=r"endpoints\[1\]") as caught:
        Upstream("p", endpoints=["http://10.0.0.1", url])  # type: ignore[list-item]
    assert why in str(caught.value)


def test_exactly_one_of_endpoints_and_resolver() -> None:
    """Both or neither of endpoints and resolver is a ConfigError saying so."""
    with pytest.raises(ConfigError, match="exactly one of endpoints"):
        Upstream("p")
    with pytest.raises(ConfigError, match="exactly one of endpoints"):
        Upstream("p", endpoints=["http://10.0.0.1"], resolver=lambda: [])


def test_empty_or_string_endpoints_are_refused() -> None:
    """An empty list, or a bare string instead of a list, is a ConfigError."""
    with pytest.raises(ConfigError, match="at least one URL"):
        Upstream("p", endpoints=[])
    with pytest.raises(ConfigError, match="must be a list of URLs"):
        Upstream("p", endpoints="http://10.0.0.1")


def test_too_many_endpoints_are_refused() -> None:
    """More than MAX_ENDPOINTS static endpoints is a ConfigError."""
    many = [f"http://10.0.{i // 250}.{i % 250}" for i in range(MAX_ENDPOINTS + 1)]
    with pytest.raises(ConfigError, match=f"at most {MAX_ENDPOINTS}"):
        Upstream("p", endpoints=many)


def test_resolver_must_be_callable() -> None:
    """A resolver that is not a function is a ConfigError naming dns() as an example."""
    with pytest.raises(ConfigError, match="resolver must be a function"):
        Upstream("p", resolver=["http://10.0.0.1"])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "http://payments", "payments:8001", "pay ments", 3, "a/b"])
def test_bad_names(name: object) -> None:
    """The name must be a bare host: no scheme, port, path or spaces."""
    with pytest.raises(ConfigError, match="name must be the host"):
        Upstream(name, endpoints=["http://10.0.0.1"])  # type: ignore[arg-type]


@pytest.mark.parametrize("setting", ["max_ejection_percent", "panic_threshold"])
@pytest.mark.parametrize("value", [-1, 100.5, float("nan"), True, "50"])
def test_percentages_in_0_100(setting: str, value: object) -> None:
    """Both percentages must be numbers in [0, 100]."""
    with pytest.raises(ConfigError, match=f"{setting} must be a percentage in \\[0, 100\\]"):
        Upstream("p", endpoints=["http://10.0.0.1"], **{setting: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 100, 33.3])
def test_percentage_bounds_are_inclusive(value: float) -> None:
    """0 and 100 are valid percentages."""
    up = Upstream(
        "p", endpoints=["http://10.0.0.1"], max_ejection_percent=value, panic_threshold=value
    )
    assert up.max_ejection_percent == up.panic_threshold == value


def test_unknown_balancer_suggests_the_closest() -> None:
    """An unknown balancer lists the valid names and the closest one."""
    with pytest.raises(ConfigError, match="did you mean 'round_robin'") as caught:
        Upstream("p", endpoints=["http://10.0.0.1"], balancer="roundrobin")
    assert "'peak_ewma'" in str(caught.value)


def test_refresh_takes_a_timedelta_and_rejects_zero() -> None:
    """refresh is a duration: timedelta accepted, 0 refused."""
    up = Upstream("p", resolver=lambda: [], refresh=timedelta(seconds=5))
    assert up.refresh == 5.0
    with pytest.raises(ConfigError, match="refresh"):
        Upstream("p", resolver=lambda: [], refresh=0)


def test_weights_are_keyed_by_normalised_url() -> None:
    """Weight keys are normalised like endpoints; unnamed endpoints weigh 1."""
    up = Upstream(
        "p",
        endpoints=["http://10.0.0.1:80", "http://10.0.0.2"],
        balancer="round_robin",
        weights={"http://10.0.0.1": 3},
    )
    assert dict(up.weights or {}) == {"http://10.0.0.1:80": 3.0}
    assert up.weight("http://10.0.0.1:80") == 3.0
    assert up.weight("http://10.0.0.2:80") == 1.0


def test_weights_must_name_known_endpoints_and_be_positive() -> None:
    """A weight for an endpoint not listed, zero, or not a mapping is a ConfigError."""
    endpoints = ["http://10.0.0.1"]
    with pytest.raises(ConfigError, match="not in endpoints"):
        Upstream("p", endpoints=endpoints, weights={"http://10.0.0.9": 2})
    with pytest.raises(ConfigError, match="above 0"):
        Upstream("p", endpoints=endpoints, weights={"http://10.0.0.1": 0})
    with pytest.raises(ConfigError, match="weights must be a dict"):
        Upstream("p", endpoints=endpoints, weights=[("http://10.0.0.1", 1)])  # type: ignore[arg-type]


def test_weights_with_a_resolver_may_name_future_endpoints() -> None:
    """With a resolver the set is not known yet, so any endpoint may be weighted."""
    up = Upstream("p", resolver=lambda: [], weights={"http://10.0.0.9": 2})
    assert up.weight("http://10.0.0.9:80") == 2.0


def test_upstream_is_frozen_and_comparable() -> None:
    """An Upstream cannot be changed after it is built, and equal settings compare equal."""
    a = Upstream("p", endpoints=["http://10.0.0.1"])
    b = Upstream("p", endpoints=["http://10.0.0.1/"])
    assert a == b
    assert hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.balancer = "random"  # type: ignore[misc]


def test_address_accepts_an_httpx_url() -> None:
    """An httpx.URL is accepted where a URL string is."""
    import httpx

    assert address("endpoints[0]", httpx.URL("http://10.0.0.1:81")).url == "http://10.0.0.1:81"


def test_async_resolvers_are_recognised() -> None:
    """async def functions and objects with an async __call__ can only be awaited."""

    class Caller:
        async def __call__(self) -> list[str]:
            return []

    async def fn() -> list[str]:
        return []

    assert is_async_only(fn)
    assert is_async_only(Caller())
    assert not is_async_only(lambda: [])
