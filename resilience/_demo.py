"""``python -m resilience demo``: watch a client survive an upstream that breaks, live.

A small upstream server starts on 127.0.0.1 (uvicorn, from the install's dev extra) and goes
healthy -> failing -> slow -> recovering. Two clients call it at the same steady rate: one
through `AsyncResilientTransport` (retries, a breaker per host, a deadline per request), and
a bare ``httpx.AsyncClient``. The terminal shows, every half second, what each client got
and the breaker's state; it ends with what the bare client suffered in comparison.

Everything here is demo code: the library never prints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import statistics
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import httpx

from ._breaker._breaker import CircuitBreaker
from ._deadline import deadline
from ._errors import CircuitOpenError, DeadlineExceeded
from ._observe._events import (
    CircuitStateChanged,
    Event,
    RetryScheduled,
    add_listener,
    remove_listener,
)

__all__ = ["main"]

# The script: (phase, starts at, what the upstream does). Short enough to finish in ~15 s.
PHASES: Final = (
    ("healthy", 0.0, "answers 200 in a few ms"),
    ("failing", 2.5, "fails 2 requests in 5 with a 503"),
    ("slow", 5.5, "hangs for 6 s before answering"),
    ("recovering", 8.5, "answers 200 again"),
)
END: Final = 11.5
INTERVAL: Final = 0.1  # each client sends 10 requests per second
ORDER_INTERVAL: Final = 0.25  # and the resilient one POSTs an order 4 times a second
TICK: Final = 0.5
SLOW_HANG: Final = 6.0  # longer than httpx's default 5 s timeout, as real hangs are
REQUEST_DEADLINE: Final = 0.8
ATTEMPT_TIMEOUT: Final = 0.5
OPEN_DURATION: Final = 1.0
BARE_TIMEOUT: Final = 5.0  # httpx's default

OK: Final = "ok"
FAILED: Final = "failed"
FAST_FAIL: Final = "fast_fail"
DEADLINE: Final = "deadline"


def phase_at(elapsed: float) -> str:
    """The upstream's phase *elapsed* seconds into the demo."""
    current = PHASES[0][0]
    for name, start, _ in PHASES:
        if elapsed >= start:
            current = name
    return current


class Upstream:
    """The flaky upstream: a raw ASGI app whose behaviour follows `PHASES`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.hits: Counter[tuple[str, str]] = Counter()  # (client, phase) -> requests received
        self.seen: Counter[str] = Counter()  # client -> requests received
        self.orders: Counter[str] = Counter()  # order id -> times the upstream recorded it
        self._lock = threading.Lock()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        client = headers.get(b"x-demo-client", b"?").decode()
        phase = phase_at(self.clock() - self.start)
        order = headers.get(b"x-order")
        with self._lock:
            self.hits[client, phase] += 1
            self.seen[client] += 1
            n = self.seen[client]
            if scope["method"] == "POST" and order is not None:
                self.orders[order.decode()] += 1  # the effect happens before any answer
        status, body = 200, b'{"price": 42}'
        # Counted per client, so both clients meet the same pattern whatever their timing.
        if phase == "failing" and n % 5 in (0, 2):
            status, body = 503, b'{"error": "overloaded"}'
        elif phase == "slow":
            await asyncio.sleep(SLOW_HANG)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@contextmanager
def serve_upstream(upstream: Upstream) -> Iterator[str]:
    """Run *upstream* under uvicorn in a thread on a free port; yield its base URL."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - the dev extra brings it
        msg = "the demo needs uvicorn: pip install 'resilience-mesh[fastapi]' (or -e '.[dev]')"
        raise SystemExit(msg) from exc
    config = uvicorn.Config(
        upstream,
        host="127.0.0.1",
        port=0,
        log_level="critical",
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="demo-upstream", daemon=True)
    thread.start()
    give_up = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > give_up or not thread.is_alive():
            raise SystemExit("the demo upstream server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


@dataclasses.dataclass(slots=True)
class Outcome:
    """One request as its caller saw it."""

    sent_at: float
    phase: str
    kind: str  # OK, FAILED, FAST_FAIL or DEADLINE
    latency: float
    detail: str = ""


@dataclasses.dataclass(slots=True)
class ClientLog:
    """Everything one client saw, and how many requests are still waiting for an answer."""

    name: str
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0

    def started(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def finished(self, outcome: Outcome) -> None:
        self.in_flight -= 1
        self.outcomes.append(outcome)


class Style:
    """ANSI colours and symbols when the terminal takes them; plain text otherwise."""

    def __init__(self, stream: Any) -> None:
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.colour = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        encoding = (getattr(stream, "encoding", None) or "ascii").lower()
        self.unicode = encoding.startswith("utf")

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def state(self, state: str) -> str:
        code = {"closed": "32", "open": "31;1", "half_open": "33", "forced_open": "31"}.get(state)
        return self.paint(f"{state:<10}", code or "0")

    @property
    def bar(self) -> str:
        return "│" if self.unicode else "|"

    @property
    def arrow(self) -> str:
        return "→" if self.unicode else "->"


def _count(outcomes: Sequence[Outcome], kind: str) -> int:
    return sum(1 for o in outcomes if o.kind == kind)


def tick_line(
    elapsed: float,
    resilient: Sequence[Outcome],
    retries: int,
    state: str,
    bare: Sequence[Outcome],
    bare_waiting: int,
    style: Style,
) -> str:
    """One row of the live table: what each client got in the last tick."""
    bar = style.bar
    return (
        f"{elapsed:5.1f}s  {phase_at(elapsed):<10} {bar} "
        f"{_count(resilient, OK):>3} {_count(resilient, FAILED):>4} "
        f"{_count(resilient, FAST_FAIL):>5} {_count(resilient, DEADLINE):>5} {retries:>5}  "
        f"{style.state(state)} {bar} "
        f"{_count(bare, OK):>3} {_count(bare, FAILED):>4} {bare_waiting:>7}"
    )


def banner(at: float, phase: str, what: str, style: Style) -> str:
    """The line that announces a new phase."""
    rule = "──" if style.unicode else "--"
    return style.paint(f"{at:5.1f}s  {rule} {phase}: the upstream {what} {rule}", "36")


def header_lines(style: Style) -> list[str]:
    """The live table's column titles."""
    bar = style.bar
    return [
        f"{'':7} {'upstream':<10} {bar} {'resilient client':<38} {bar} bare httpx client",
        f"{'time':>6}  {'phase':<10} {bar} {'ok':>3} {'fail':>4} {'fast':>5} {'dline':>5} "
        f"{'retry':>5}  {'breaker':<10} {bar} {'ok':>3} {'fail':>4} {'waiting':>7}",
    ]


LEGEND: Final = (
    "ok: answered 200 · fail: an error or a 5xx reached the caller · "
    "fast: rejected at once by the open breaker, no request sent · "
    "dline: cut by the request's deadline · retry: attempts sent again · "
    "breaker: the per-host breaker's state · waiting: bare requests still without an answer"
)


def legend_lines(style: Style) -> list[str]:
    """What each column of the live table counts."""
    text = LEGEND if style.unicode else LEGEND.replace("·", ";")
    return [style.paint(line, "2") for line in textwrap.wrap(text, width=92)]


@dataclasses.dataclass(slots=True)
class OrderBook:
    """The POSTs the resilient client sent (no Idempotency-Key) and what the upstream recorded."""

    sent: int = 0
    answered: int = 0
    recorded: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def twice(self) -> int:
        """Orders the upstream recorded more than once (the number that must stay 0)."""
        return sum(1 for times in self.recorded.values() if times > 1)


def _seconds(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} s" if values else "-"


def summary_lines(
    resilient: ClientLog,
    bare: ClientLog,
    hits: Counter[tuple[str, str]],
    style: Style,
    orders: OrderBook | None = None,
) -> list[str]:
    """The closing comparison between the resilient and the bare client."""
    rows: list[tuple[str, str, str]] = []

    def add(label: str, left: object, right: object) -> None:
        rows.append((label, str(left), str(right)))

    r, b = resilient.outcomes, bare.outcomes
    r_fail = [o for o in r if o.kind != OK]
    b_fail = [o for o in b if o.kind != OK]
    add("requests made", len(r), len(b))
    add("succeeded", _count(r, OK), _count(b, OK))
    add("failed", len(r_fail), len(b_fail))
    add("  of which rejected at once (breaker open)", _count(r, FAST_FAIL), 0)
    add("  of which cut by the deadline", _count(r, DEADLINE), 0)
    add(
        "median wait for a failure",
        _seconds([o.latency for o in r_fail]),
        _seconds([o.latency for o in b_fail]),
    )
    add(
        "longest wait for any answer",
        f"{max((o.latency for o in r), default=0.0):.2f} s",
        f"{max((o.latency for o in b), default=0.0):.2f} s",
    )
    add(
        "caller time lost on failures",
        f"{sum(o.latency for o in r_fail):.1f} s",
        f"{sum(o.latency for o in b_fail):.1f} s",
    )
    add("most requests waiting at once", resilient.peak_in_flight, bare.peak_in_flight)
    add(
        "requests the upstream got while failing",
        hits["resilient", "failing"],
        hits["bare", "failing"],
    )
    add(
        "requests the upstream got while hanging",
        hits["resilient", "slow"],
        hits["bare", "slow"],
    )
    if orders is not None:
        add("orders POSTed (no Idempotency-Key)", orders.sent, "-")
        add("  recorded by the upstream", len(orders.recorded), "-")
        add("  recorded twice", orders.twice, "-")
    width = max(len(label) for label, _, _ in rows)
    lines = [
        "",
        style.paint("Summary", "1"),
        f"  {'':<{width}}  {'resilient':>10}  {'bare httpx':>10}",
    ]
    lines += [f"  {label:<{width}}  {left:>10}  {right:>10}" for label, left, right in rows]
    lines.append("")
    sentences = story(resilient, bare, hits)
    if orders is not None:
        sentences.append(
            f"- {orders.sent} orders were POSTed with no Idempotency-Key; the upstream recorded "
            f"{len(orders.recorded)} of them and none twice ({orders.twice}): a POST is sent again "
            "only when nothing reached the server, so an answer lost to a hang or a cut "
            "connection never repeats the effect."
        )
    for sentence in sentences:
        lines.append(textwrap.fill(sentence, width=92, subsequent_indent="  "))
    lines += ["", read_more()]
    return lines


def read_more() -> str:
    """Where to read on, pointing at something that exists where the demo runs."""
    docs = pathlib.Path(__file__).resolve().parents[1] / "docs" / "index.md"
    if docs.is_file():  # a clone of the repository: the guide is right there
        try:
            shown = docs.relative_to(pathlib.Path.cwd())
        except ValueError:
            shown = docs
        return f"Read on: {shown} (a page per pattern, every example runs)."
    return "Read on: python -m pydoc resilience (every public name has an example)."


def story(resilient: ClientLog, bare: ClientLog, hits: Counter[tuple[str, str]]) -> list[str]:
    """What the numbers mean, phase by phase, in a few sentences."""

    def failed(log: ClientLog, phase: str) -> int:
        return sum(1 for o in log.outcomes if o.phase == phase and o.kind != OK)

    bare_waits = [o.latency for o in bare.outcomes if o.phase == "slow"]
    return [
        f"- While the upstream failed 2 requests in 5, retries turned its 503s into successes: "
        f"{failed(resilient, 'failing')} failed calls instead of {failed(bare, 'failing')} "
        f"(at the cost of {hits['resilient', 'failing'] - hits['bare', 'failing']} extra "
        "requests).",
        f"- While it hung, the deadline cut every wait at {REQUEST_DEADLINE:g} s, the breaker "
        f"opened, and callers got an immediate CircuitOpenError (ready for a fallback or a "
        f"503 with Retry-After): the upstream got {hits['resilient', 'slow']} requests instead "
        f"of {hits['bare', 'slow']}, while bare callers waited "
        f"{max(bare_waits, default=0.0):.0f} s each, piling up.",
        "- Once it recovered, a half-open probe succeeded and the breaker closed on its own.",
    ]


async def _drive(
    client_name: str,
    send: Callable[[], Any],
    log: ClientLog,
    start: float,
    clock: Callable[[], float],
) -> None:
    """Send a request every INTERVAL until END, each in its own task (an open-loop load)."""
    tasks: set[asyncio.Task[None]] = set()
    n = 0

    async def one() -> None:
        sent = clock()
        phase = phase_at(sent - start)
        log.started()
        kind, detail = await send()
        log.finished(Outcome(sent - start, phase, kind, clock() - sent, detail))

    while (due := start + n * INTERVAL) < start + END:
        await asyncio.sleep(max(0.0, due - clock()))
        task = asyncio.create_task(one(), name=f"{client_name}-{n}")
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks)


def _verdict(response: httpx.Response) -> tuple[str, str]:
    return (OK if response.status_code == 200 else FAILED), str(response.status_code)


def _resilient_client(base_url: str) -> tuple[httpx.AsyncClient, Any]:
    from . import backoff
    from ._policy import Policy
    from ._retry._retry import Retry
    from .httpx import AsyncResilientTransport

    policy = Policy(
        retry=Retry(
            on=httpx.TransportError,
            attempts=3,
            backoff=backoff.exponential(initial=0.05, maximum=0.2),
        ),
        breaker=CircuitBreaker(
            "demo",
            failure_rate=0.5,
            window=20,
            minimum_calls=10,
            open_duration=OPEN_DURATION,
        ),
        attempt_timeout=ATTEMPT_TIMEOUT,
    )
    transport = AsyncResilientTransport(policy=policy)
    client = httpx.AsyncClient(
        base_url=base_url, transport=transport, headers={"x-demo-client": "resilient"}
    )
    return client, transport


async def _run(out: Callable[[str], None], style: Style) -> int:
    upstream = Upstream()
    with serve_upstream(upstream) as base_url:
        resilient_client, transport = _resilient_client(base_url)
        bare_client = httpx.AsyncClient(
            base_url=base_url, timeout=BARE_TIMEOUT, headers={"x-demo-client": "bare"}
        )
        resilient, bare = ClientLog("resilient"), ClientLog("bare")
        retries = 0
        orders = OrderBook(recorded=upstream.orders)

        async def send_order(n: int) -> None:
            orders.sent += 1
            headers = {"x-demo-client": "orders", "x-order": str(n)}
            try:
                async with deadline(REQUEST_DEADLINE):
                    response = await resilient_client.post("/orders", headers=headers)
            except (httpx.HTTPError, CircuitOpenError, DeadlineExceeded):
                return
            if response.status_code == 200:
                orders.answered += 1

        async def place_orders() -> None:
            placed: list[asyncio.Task[None]] = []
            n = 0
            while (due := upstream.start + n * ORDER_INTERVAL) < upstream.start + END:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                placed.append(asyncio.create_task(send_order(n), name=f"order-{n}"))
                n += 1
            await asyncio.gather(*placed)

        def on_event(event: Event) -> None:
            nonlocal retries
            if isinstance(event, RetryScheduled):
                retries += 1
            elif isinstance(event, CircuitStateChanged):
                elapsed = time.monotonic() - upstream.start
                reason = f"  ({event.reason})" if event.reason else ""
                out(
                    style.paint(
                        f"{elapsed:5.1f}s  breaker {event.breaker}: "
                        f"{event.old_state} {style.arrow} {event.new_state}{reason}",
                        "1",
                    )
                )

        async def send_resilient() -> tuple[str, str]:
            try:
                async with deadline(REQUEST_DEADLINE):
                    response = await resilient_client.get("/price")
            except CircuitOpenError:
                return FAST_FAIL, "CircuitOpenError"
            except DeadlineExceeded:
                return DEADLINE, "DeadlineExceeded"
            except httpx.HTTPError as exc:
                return FAILED, type(exc).__name__
            return _verdict(response)

        async def send_bare() -> tuple[str, str]:
            try:
                response = await bare_client.get("/price")
            except httpx.HTTPError as exc:
                return FAILED, type(exc).__name__
            return _verdict(response)

        def breaker_state() -> str:
            breakers = list(transport.breakers.values())
            return str(breakers[0].state.value) if breakers else "closed"

        async def ticker() -> None:
            seen_r = seen_b = retries_seen = 0
            t = TICK
            while True:
                await asyncio.sleep(max(0.0, upstream.start + t - time.monotonic()))
                new_r, new_b = resilient.outcomes[seen_r:], bare.outcomes[seen_b:]
                seen_r, seen_b = seen_r + len(new_r), seen_b + len(new_b)
                out(
                    tick_line(
                        t,
                        new_r,
                        retries - retries_seen,
                        breaker_state(),
                        new_b,
                        bare.in_flight,
                        style,
                    )
                )
                retries_seen = retries
                for name, starts, what in PHASES:
                    if t < starts <= t + TICK:
                        out(banner(starts, name, what, style))
                t += TICK

        out(style.paint("resilience demo", "1"))
        intro = (
            f"A local upstream at {base_url} goes healthy, failing, slow, then recovers. "
            "Two clients call it 10 times a second: one through AsyncResilientTransport "
            f"(3 attempts of at most {ATTEMPT_TIMEOUT:g} s, a breaker per host, "
            f"deadline({REQUEST_DEADLINE:g}) around each request), one bare httpx.AsyncClient."
        )
        for line in textwrap.wrap(intro, width=92):
            out(line)
        out("Each row counts the answers that came back in the last half second.")
        out("")
        for line in legend_lines(style) + header_lines(style):
            out(line)
        out(banner(0.0, PHASES[0][0], PHASES[0][2], style))
        add_listener(on_event)
        tick_task = asyncio.create_task(ticker())
        try:
            async with resilient_client, bare_client:
                await asyncio.gather(
                    _drive("resilient", send_resilient, resilient, upstream.start, time.monotonic),
                    _drive("bare", send_bare, bare, upstream.start, time.monotonic),
                    place_orders(),
                )
        finally:
            remove_listener(on_event)
            tick_task.cancel()
            try:
                await tick_task
            except asyncio.CancelledError:
                pass
        out(f"{time.monotonic() - upstream.start:5.1f}s  every request has its answer.")
        for line in summary_lines(resilient, bare, upstream.hits, style, orders):
            out(line)
    return 0


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], None] | None = None) -> int:
    """Run the demo; returns the exit status.

    Example:
        >>> from resilience._demo import phase_at
        >>> phase_at(0.0), phase_at(3.0), phase_at(6.0), phase_at(10.0)
        ('healthy', 'failing', 'slow', 'recovering')
    """
    del argv
    stream = sys.stdout
    style = Style(stream)

    def write(line: str) -> None:
        print(line, flush=True)

    try:
        return asyncio.run(_run(out or write, style))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as Unix tools do, and keep the
        # interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
