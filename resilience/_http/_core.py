"""The per-request plan and per-attempt bookkeeping shared by the resilient transports.

A driver (the sync or async transport in `resilience.httpx`) does the I/O; this module says
what the I/O should be. Per request, `TransportCore.begin` makes a `Call`: the retry settings
after the per-request overrides (`._overrides`), whether the request is safe to repeat and
replayable (`._rules`), its deadline scope and its host's breaker (`._hosts`). Per attempt,
`before_attempt` checks the deadline, clamps the attempt's timeouts and takes a breaker
permit; `after_error` / `after_status` record the outcome, classify it with the HTTP rules
and ask the one retry decision (`resilience._retry._decision.decide`, the same `Retry`
asks), then report its verdict through `resilience._retry._retry.announce`.

Nothing here imports httpx except through `._compat`, and what the core reads of a request
is small (method, headers, URL parts, a per-request extensions dict, the body stream type)
so that other clients' adapters can drive the same core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, ClassVar, Final

from .. import _testmode, _validate
from .._breaker._breaker import CircuitBreaker
from .._breaker._registry import mark_template
from .._deadline import _CURRENT, check_deadline
from .._errors import ConfigError, DeadlineExceeded
from .._observe import _otel_gate
from .._observe._events import DeadlineExceededEvent, emit, error_name
from .._policy import Policy
from .._retry._decision import DEFAULT_ATTEMPTS, MAX_RETRY_AFTER, decide
from .._retry._report import announce
from .._retry._retry import Retry
from .._retry._shape import check_arity
from ._call import Call, retry_plan
from ._compat import ByteStream, url_host
from ._hosts import DEFAULT_BREAKER_NAME, DEFAULT_HOST_BREAKER, HostBreakers, HostEntry
from ._outer import RETRY_COUNT_HEADERS, join_request
from ._overrides import EXTENSION, parse_overrides
from ._routing import Route, Routes
from ._rules import (
    HTTPX_ERRORS,
    IDEMPOTENCY_HEADER,
    IDEMPOTENT_METHODS,
    KEYED_METHODS,
    LOWER_NAME,
    ErrorKinds,
    RequestLike,
    as_httpx,
    attempt_timeouts,
    authority,
    budget_cut,
    has_none_of,
    is_retryable_error,
    new_idempotency_key,
    parse_retry_after,
    safe_to_repeat,
)

if TYPE_CHECKING:
    from .._bulkhead import Bulkhead
    from .._upstream._pool import Pool

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_BUFFER_LIMIT",
    "DEFAULT_MAX_RETRY_AFTER",
    "RESEND_COUNT_EXTENSION",
    "RequestLike",
    "TransportCore",
    "deadline_error",
]

DEFAULT_MAX_RETRY_AFTER: Final = MAX_RETRY_AFTER
"""Longest `Retry-After` honoured, in seconds; longer values are capped to this."""

DEFAULT_BUFFER_LIMIT: Final = 1 << 20
"""Bodies (request or response) with a declared length up to this are read into memory."""

RESEND_COUNT_EXTENSION: Final = "resilience.resend_count"
"""Set on the request's extensions for every retry (1 on the first retry, then 2...)."""

# A timeout that fires this close to the deadline was the deadline's doing.
_DEADLINE_SLACK: Final = 0.02
_new: Final = object.__new__
current_deadline: Final = _CURRENT.get
"""`resilience._deadline.current_deadline` without its Python frame (read per attempt)."""
_PLANNING_HEADERS: Final = frozenset(
    name.encode() for name in (IDEMPOTENCY_HEADER, *RETRY_COUNT_HEADERS)
)
"""Request headers that change how a request is planned: without them (most requests) one
scan of httpx's headers stands for looking each up (`has_none_of`)."""
_TIMEOUT_HEADROOM: Final = 0.01
"""httpx's own timeouts fire this much before the deadline (at most a tenth of what is left),
so an attempt cut by the deadline ends as an httpx timeout the transport recognises (and
turns into `DeadlineExceeded`) rather than as a bare cancellation of the task."""
_MIN_HEADER_BUDGET: Final = 0.001
"""Below one millisecond the deadline header would read ``0``, which means "no deadline"."""


class TransportCore:
    """Settings and shared logic of a resilient transport (both drivers hold one).

    The drivers call `begin` once per request, then per attempt `before_attempt`, the
    inner transport, and `after_error` or `after_response`, which say whether to retry and
    after how long.
    """

    in_memory: ClassVar[tuple[type, ...]] = (ByteStream,)
    """Request bodies held in memory, hence replayable (other clients' cores name theirs)."""
    note: ClassVar[str] = "resilience.httpx: "
    """How the notes (PEP 678) this core adds to errors begin: the adapter's module."""

    __slots__ = (
        "buffer_limit",
        "bulkhead",
        "clock",
        "deadline_header",
        "errors",
        "hosts",
        "idempotency_keys",
        "max_retry_after",
        "policy",
        "policy_attempt_timeout",
        "policy_timeout",
        "quick_budget",
        "quick_ok",
        "retry",
        "retry_plan",
        "retry_statuses",
        "routes",
        "token",
        "wall_clock",
    )

    def __init__(
        self,
        *,
        policy: object,
        idempotency_keys: object,
        max_retry_after: _validate.Duration,
        buffer_limit: int,
        deadline_header: str | None,
        max_hosts: int,
        retry_statuses: object,
        clock: _validate.Clock,
        wall_clock: _validate.Clock,
        errors: ErrorKinds = HTTPX_ERRORS,
        upstreams: tuple[object, ...] = (),
        is_async: bool = False,
    ) -> None:
        self.errors = errors
        # Names this transport to `._outer` without a context keeping the transport alive.
        self.token = object()
        if idempotency_keys is True:
            self.idempotency_keys: Callable[[], str] | None = new_idempotency_key
        elif idempotency_keys is False:
            self.idempotency_keys = None
        elif callable(idempotency_keys) and not isinstance(idempotency_keys, type):
            self.idempotency_keys = check_arity(
                "idempotency_keys",
                idempotency_keys,
                args=0,
                takes="",
                fix="give a function returning a new key, e.g. lambda: str(uuid.uuid4())",
            )
        else:
            msg = (
                "idempotency_keys must be True, False or a function returning a new key, "
                f"got {idempotency_keys!r}"
            )
            raise ConfigError(msg)
        self.max_retry_after = _validate.required_duration(
            "max_retry_after", max_retry_after, allow_zero=True
        )
        self.buffer_limit = _validate.required_integer(
            "buffer_limit", buffer_limit, minimum=0, maximum=_validate.MAX_BYTES
        )
        self.deadline_header = _validate.header_name(
            "deadline_header", deadline_header, allow_none=True
        )
        max_hosts = _validate.required_integer("max_hosts", max_hosts)
        if not isinstance(retry_statuses, frozenset | set | tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599
            for s in retry_statuses
        ):
            msg = f"retry_statuses must be a set of HTTP status codes, got {retry_statuses!r}"
            raise ConfigError(msg)
        self.retry_statuses = frozenset(retry_statuses)
        self.clock = _validate.clock("clock", clock)
        self.wall_clock = _validate.clock("wall_clock", wall_clock)
        if policy is not None and not isinstance(policy, Policy):
            msg = f"policy must be a resilience.Policy or None, got {policy!r}"
            raise ConfigError(msg)
        self.policy = policy

        template: CircuitBreaker | None
        if policy is None:
            self.retry: Retry | None = _default_retry()
            template = None
            self.policy_timeout: float | None = None
            self.policy_attempt_timeout: float | None = None
            self.bulkhead: Bulkhead | None = None
            base = DEFAULT_BREAKER_NAME
            # A partial, not a bound method: no cycle, so a dropped transport's breakers
            # leave the registry at once instead of at the next garbage collection.
            factory: Callable[[str], CircuitBreaker] = partial(
                CircuitBreaker, clock=self.clock, **DEFAULT_HOST_BREAKER
            )
        else:
            self.retry = policy.retry
            template = mark_template(policy.breaker)  # cloned per host, never listed itself
            self.policy_timeout = policy.timeout
            self.policy_attempt_timeout = policy.attempt_timeout
            self.bulkhead = policy.bulkhead
            base = template.name if template is not None else DEFAULT_BREAKER_NAME
            factory = (
                template.clone if template is not None else partial(CircuitBreaker, clock=clock)
            )
        self.retry_plan = plan = None if self.retry is None else retry_plan(self.retry)
        self.hosts: HostBreakers | None = (
            HostBreakers(base, factory, max_hosts)
            if policy is None or template is not None
            else None
        )
        # Endpoints always have a breaker: the policy's template, else the transport's
        # default per-host one (also when the policy has no breaker).
        if template is None:
            factory = partial(CircuitBreaker, clock=self.clock, **DEFAULT_HOST_BREAKER)
        self.routes: Routes | None = (
            Routes(upstreams, base=base, breaker=factory, clock=self.clock, is_async=is_async)
            if upstreams
            else None
        )
        # Whether requests may take the quick path (`quick`), and the budget it counts in.
        self.quick_budget = None if plan is None else plan[2]
        self.quick_ok = (
            self.bulkhead is None
            and self.policy_timeout is None
            and self.policy_attempt_timeout is None
            and self.idempotency_keys is None
            and (plan is None or (plan[1] is None and not plan[3]))
        )

    # ------------------------------------------------------------------ per request

    def quick(self, request: RequestLike) -> HostEntry | Pool | None:
        """The host entry or upstream pool of an httpx(2) request's quick path, else None.

        The drivers' quick path sends a first attempt without a `Call`, for transports with
        nothing per request to plan (no bulkhead, policy timeouts, automatic keys or
        tenacity wait) and requests with nothing special (no override or planning header, a
        body in memory, no deadline, no SDK recording): all `begin` and `before_attempt` do
        for those is count the call in the retry budget and find the host's breaker or the
        upstream's pool. A failed or retryable attempt becomes a `Call` (`resume`).
        """
        if (
            not self.quick_ok
            or current_deadline() is not None
            or not isinstance(request.stream, self.in_memory)
            or request.extensions.get(EXTENSION) is not None
            # `has_none_of`, inlined: httpx's and httpx2's headers keep ``_list``
            or not _PLANNING_HEADERS.isdisjoint(map(LOWER_NAME, request.headers._list))
            or not _otel_gate.attempts_unrecorded()  # one call (`_load_http`)
        ):
            return None
        routes = self.routes
        # The pool `Routes.route` finds; the driver makes the `Route` (after the resolver).
        found: HostEntry | Pool | None = (
            None if routes is None else routes.pools.get(url_host(request.url))  # type: ignore[arg-type]
        )
        if found is None:
            hosts = self.hosts
            if hosts is None:
                return None  # no breaker per host: nothing quick to do
            found = hosts.entry(request.url)
        budget = self.quick_budget
        if budget is not None:
            budget.record_call()  # as `begin` counts the call
        return found

    def resume(
        self,
        request: RequestLike,
        breaker: CircuitBreaker | None,
        timer: _validate.Clock | None,
        permit: int,
        started: float,
        route: Route | None,
    ) -> Call:
        """The `Call` of a request `quick` let through, after its first attempt: what
        `begin` and `before_attempt` would have made of it."""
        call = Call(request)
        call.idempotent = request.method in IDEMPOTENT_METHODS
        retry = self.retry
        if retry is not None:
            call.retry = retry
            call.max_attempts = _testmode.max_attempts(retry.attempts)
        call.attempt = 1
        call.route = route
        call.breaker = breaker
        call.timer = timer
        call.permit = permit
        call.started = started
        return call

    def begin(self, request: RequestLike) -> Call:
        """Plan a request: overrides, retry settings, idempotency, body replay, breaker."""
        call = _new(Call)  # `Call(request)` without its __init__ frame
        call.request = request
        call.base_extensions = request.extensions
        headers = request.headers
        method = request.method
        retry = self.retry
        attempts: int | None = None
        idempotent: bool | None = None
        raw = call.base_extensions.get(EXTENSION)
        if raw is not None:
            overrides = parse_overrides(raw)
            if overrides.no_retry:
                retry = None
            elif overrides.retry is not None:
                retry = overrides.retry
            attempts = overrides.attempts
            idempotent = overrides.idempotent

        if has_none_of(headers, _PLANNING_HEADERS):
            # The common case, answered by one scan: no SDK retry count, no key of the caller's.
            logical = None
            new_key = self.idempotency_keys
            if new_key is not None and method in KEYED_METHODS:
                headers[IDEMPOTENCY_HEADER] = new_key()
                call.idempotent = True if idempotent is None else idempotent
            else:
                call.idempotent = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        else:
            # An SDK's retry of a call joins it: one key, one budget of attempts (`._outer`).
            logical = call.logical = join_request(self.token, request)
            new_key = self.idempotency_keys
            if (
                new_key is not None
                and method in KEYED_METHODS
                and IDEMPOTENCY_HEADER not in headers
            ):
                headers[IDEMPOTENCY_HEADER] = (
                    new_key() if logical is None else logical.key_for(new_key)
                )
            call.idempotent = safe_to_repeat(method, headers, idempotent)

        if retry is not None:
            call.retry = retry
            plan = self.retry_plan
            if retry is not self.retry or plan is None:
                plan = retry_plan(retry)
            attempts_set, timeout, budget, tenacity = plan
            most = _testmode.max_attempts(attempts_set) if attempts is None else attempts
            if logical is not None and logical.sent:
                most = logical.attempts(most)
            if most > 1:
                if not isinstance(request.stream, self.in_memory):
                    call.must_read, replayable = self._replay_mode(request)
                    if not replayable:
                        most = 1
                if most > 1 and tenacity:
                    # A tenacity wait sees the request as the call's argument.
                    call.state = retry.new_state(None, (request,), {})
            call.max_attempts = most
            if timeout is not None:
                call.scope = timeout
            if budget is not None and (logical is None or not logical.sent):
                budget.record_call()  # an SDK's retry is not a new call

        scope = self.policy_timeout
        if scope is not None and (call.scope is None or scope < call.scope):
            call.scope = scope
        routes = self.routes
        if routes is not None:
            call.route = routes.route(as_httpx(request))
            if call.route is not None:
                return call  # each attempt takes its endpoint's breaker
        if self.hosts is not None:
            _, call.breaker, call.timer, _ = self.hosts.entry(request.url)
        return call

    def _replay_mode(self, request: RequestLike) -> tuple[bool, bool]:
        """(must read first, replayable) for the request body."""
        stream = request.stream
        if isinstance(stream, self.in_memory):
            return False, True
        length = request.headers.get("content-length")
        if (
            length is not None
            and length.isascii()
            and length.isdigit()
            and int(length) <= self.buffer_limit
        ):
            return True, True
        return False, False

    def before_attempt(self, call: Call) -> None:
        """Check the deadline, set this attempt's timeouts and headers, take a breaker permit.

        The driver then opens the attempt's span (`_otel_gate.http_attempt`) and injects the
        trace context inside it, so ``traceparent`` names the attempt.
        """
        call.attempt += 1
        if call.logical is not None:
            call.logical.sent += 1
        request = call.request
        expiry = call.expiry = current_deadline()
        left = None if expiry is None else check_deadline("the HTTP request")
        limit = left
        attempt_timeout = self.policy_attempt_timeout
        if attempt_timeout is not None and (limit is None or attempt_timeout < limit):
            limit = attempt_timeout
        if limit is not None or call.attempt > 1:
            extensions = dict(call.base_extensions)
            if limit is not None:
                budget = None if left is None else left - min(_TIMEOUT_HEADROOM, left / 10)
                extensions["timeout"], call.cut = attempt_timeouts(
                    call.base_extensions.get("timeout"), attempt_timeout, budget
                )
                if self.deadline_header is not None:
                    if left is not None and left < _MIN_HEADER_BUDGET:
                        # "0" would tell the server it has no deadline at all.
                        raise deadline_error("less than 1 ms was left for the deadline header")
                    # Whole milliseconds, rounded down: never promise more than remains.
                    ms = int(limit * 1000)
                    request.headers[self.deadline_header] = str(ms) if ms > 0 else "1"
            if call.attempt > 1:
                extensions[RESEND_COUNT_EXTENSION] = call.attempt - 1
            request.extensions = extensions
        route = call.route
        if route is not None:
            try:
                endpoint, permit = route.pick(as_httpx(request))
            except Exception as exc:
                if call.attempt > 1:
                    exc.add_note(f"resilience.httpx: rejected before attempt {call.attempt}")
                raise
            # Sent despite its breaker (ejection cap, panic mode): nothing to record in it.
            breaker = endpoint.breaker if permit is not None else None
            call.breaker = breaker
            call.permit = permit or 0
            if breaker is not None:
                clock = call.timer = endpoint.timer  # the breaker's, when it times slow calls
                if clock is not None:
                    call.started = clock()
            return
        breaker = call.breaker
        if breaker is not None:
            try:
                call.permit = breaker.acquire()
            except Exception as exc:
                if call.attempt > 1:
                    exc.add_note(f"{self.note}rejected before attempt {call.attempt}")
                raise
            if call.timer is not None:
                call.started = call.timer()

    def release(self, call: Call) -> None:
        """Give back the breaker permit of an attempt that was cancelled or interrupted."""
        breaker = call.breaker
        if breaker is not None:
            breaker.release(call.permit)
        if call.route is not None:
            call.route.release(as_httpx(call.request))

    def after_error(self, call: Call, exc: Exception) -> float | None:
        """Record a failed attempt; return the wait before the next one, or None to stop.

        Raises `DeadlineExceeded` (from *exc*) when the attempt timed out because the
        active deadline ran out. A timeout the deadline shortened below the transport's own
        setting is the caller's budget running out, not the host failing: the breaker
        permit is given back, not recorded as a failure.

        A request that is not safe to repeat is sent again only when nothing reached the
        server (`is_not_sent`), whatever the `Retry`'s ``on`` says; ``on`` adds retryable
        errors for requests that are safe to repeat.
        """
        kinds = self.errors
        breaker = call.breaker
        counted = (
            isinstance(exc, kinds.transport)
            and not isinstance(exc, kinds.caller_errors)
            and not budget_cut(exc, call.cut, kinds)
        )
        if breaker is not None:
            if counted:
                timer = call.timer
                duration = 0.0 if timer is None else timer() - call.started
                breaker.record_exception(call.permit, exc, duration)
            else:
                breaker.release(call.permit)
        if call.route is not None:
            call.route.end(as_httpx(call.request), ok=not counted)
        if isinstance(exc, kinds.timeout):
            expiry = current_deadline()
            if expiry is not None and expiry.remaining() <= _DEADLINE_SLACK:
                raise _deadline_error(exc)
        elif isinstance(exc, DeadlineExceeded):
            return None  # the drivers' own check while the answer arrived: no time to retry
        retry = call.retry
        if retry is None:
            return None
        if isinstance(exc, kinds.not_sent):
            retryable = True
        elif call.idempotent:
            retryable = is_retryable_error(exc, True, kinds) or _extra(retry, exc)
        else:
            retryable = False
        return self._next(call, retryable, None, error_name(exc), exc)

    def after_response(
        self, call: Call, response: object, status: int, headers: Mapping[str, str]
    ) -> float | None:
        """Record an attempt that got *response*; return the wait before retrying, or None.

        *status* and *headers* are the response's (read by the driver, whose client names
        them); *response* itself is only handed to a tenacity wait as the outcome.
        """
        breaker = call.breaker
        if breaker is not None:
            timer = call.timer
            duration = 0.0 if timer is None else timer() - call.started
            if status >= 500:
                breaker.record_failure(call.permit, duration)
            else:
                breaker.record_success(call.permit, duration)
        if call.route is not None:
            call.route.end(as_httpx(call.request), ok=status < 500)
        if call.retry is None or status not in self.retry_statuses:
            return None
        retry_after = None
        header = headers.get("retry-after")
        if header is not None:
            retry_after = parse_retry_after(header, self.wall_clock())
        return self._next(call, call.idempotent, retry_after, f"HTTP {status}", None, response)

    def _next(
        self,
        call: Call,
        retryable: bool,
        retry_after: float | None,
        error: str,
        exc: Exception | None,
        response: object = None,
    ) -> float | None:
        """Ask `decide` what follows a failed attempt; report its verdict like `Retry` does."""
        if not retryable or call.max_attempts <= 1:
            return None  # not retryable, or sent once by design: nothing gave up
        retry = call.retry
        assert retry is not None
        state = call.state
        expiry = current_deadline()
        verdict = decide(
            call.attempt,
            call.max_attempts,
            retry.backoff_for(exc, response, state),
            hint=retry_after,
            hint_cap=self.max_retry_after,
            testing=_testmode.settings() is not None,
            deadline_left=None if expiry is None else expiry.remaining(),
            budget=retry.budget,
        )
        name = call.breaker.name if call.breaker is not None else authority(call.request.url)
        wait = announce(verdict, name, call.attempt, error, exc, self.note)
        if wait is not None and state is not None:
            state.idle_for += wait
        return wait


def _extra(retry: Retry, exc: Exception) -> bool:
    """Whether the policy's `Retry` adds *exc* to the HTTP rules (its ``on`` filter)."""
    try:
        return bool(retry.should_retry(exc))
    except Exception:
        return False


def deadline_error(detail: str) -> DeadlineExceeded:
    """`DeadlineExceeded` for the HTTP request, saying why (and the event for it)."""
    emit(DeadlineExceededEvent(where="the HTTP request"))
    return DeadlineExceeded(f"the HTTP request ran out of time: {detail}")


def _deadline_error(exc: Exception) -> DeadlineExceeded:
    error = deadline_error(f"the deadline expired ({error_name(exc)})")
    error.__cause__ = exc
    return error


def _never(exc: BaseException) -> bool:
    """The default `Retry`'s ``on``: the HTTP rules alone decide what is retried."""
    return False


def _default_retry() -> Retry:
    return Retry(on=_never, attempts=DEFAULT_ATTEMPTS)
