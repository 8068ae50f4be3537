"""What the web middleware costs a request: FastAPI (`add_resilience`) and Flask (`Resilience`).

Every app answers ``GET /hello`` with a 2-byte body (`bench._mwserver` builds them). Each is
measured bare, behind a pass-through middleware that does nothing (the floor of any
middleware), behind ours with its defaults, behind ours with ``timeout=5`` (every request
then runs under a deadline scope), and behind a peer: Starlette's ``BaseHTTPMiddleware`` with
a pass-through ``dispatch`` (how many ASGI middlewares are written), or for Flask a no-op
``before_request`` and ``after_request`` hook (the lightest way an extension joins a request).

- In process: the app called straight, no server and no socket: ASGI
  ``await app(scope, receive, send)`` in one event loop, WSGI ``app(environ, start_response)``
  with the body iterated and closed; a fresh scope or environ per request (a copy of one
  template with five common headers). ns per request, the median of samples interleaved in
  shuffled turns; the note gives the median over turns of the difference to the bare app in
  the same turn, which is what the middleware adds (targets: +3 µs, +6 µs with a timeout).
- A real server: the same apps served in child processes (uvicorn for FastAPI, Werkzeug's
  threaded server for Flask), one server per contender, asked ``GET /hello`` one request
  after another by a plain-socket client in this process (a few µs a request, so the
  server's cost dominates), on one kept-alive connection for uvicorn and on a new connection
  per request for Werkzeug (its server closes each one). Requests per second, in blocks
  interleaved in shuffled turns, the median block.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import random
import socket
import statistics
import sys
import time
import timeit
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._harness import (
    CHUNK,
    Case,
    Contender,
    Row,
    Settings,
    failed_row,
    sample_rows,
)
from ._mwserver import (
    BARE,
    BODY,
    FLOOR,
    OURS,
    PATH,
    PEER,
    TIMEOUT,
    asgi_alone,
    fastapi_app,
    flask_app,
    wsgi_alone,
)
from ._servers import AppServer

TITLE = "web middleware: one GET, app called in process"
SERVER_TITLE = "web middleware: GET through a real server"
UNIT = "ns/call"
SERVER_UNIT = "req/s"
# Short samples and many turns: a sample of one contender and the bare app's sample of the
# same turn are a few milliseconds apart, so their difference, what the middleware adds,
# sees the same load on a shared machine.
TURNS = 101
# Two copies of one app can differ by a µs a request (where their objects lie in memory):
# each contender is built this many times, and its samples go round the copies.
INSTANCES = 5
TURNS_QUICK = 5
SAMPLE_NS = 8_000_000
SAMPLE_NS_QUICK = 4_000_000
BLOCK = 100
BLOCKS = 30
BLOCKS_QUICK = 4

HEADERS = (
    ("host", "127.0.0.1:8000"),
    ("user-agent", "bench/1.0"),
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
    ("connection", "keep-alive"),
)


# What each kind of app is called in the tables, and its peer.
KINDS: dict[str, tuple[str, Callable[[str], Any], str, str]] = {
    # kind: (variant label, builder, our setup as shown, peer)
    "fastapi": ("FastAPI app", fastapi_app, "add_resilience(app{})", "BaseHTTPMiddleware"),
    "asgi": (
        "ASGI middleware alone",
        asgi_alone,
        "ResilienceMiddleware(app{})",
        "BaseHTTPMiddleware",
    ),
    "flask": ("Flask app", flask_app, "Resilience(app{})", "no-op before/after_request hooks"),
    "wsgi": ("WSGI middleware alone", wsgi_alone, "Resilience(app{})", "ProxyFix"),
}


def contenders(kind: str) -> list[Contender]:
    """The apps of one kind: bare, the floor, ours, ours with a timeout, a peer."""
    _, build, ours, peer = KINDS[kind]
    alone = kind in ("asgi", "wsgi")
    floor = "pure ASGI pass-through" if kind in ("fastapi", "asgi") else "WSGI pass-through"
    bare = "minimal app" if alone else f"{kind} (bare)"
    return [
        Contender(bare, "baseline", lambda: build(BARE), "answers at once" if alone else ""),
        Contender(floor, "baseline", lambda: build(FLOOR), "the floor of any middleware"),
        Contender(ours.format(""), "us", lambda: build(OURS)),
        Contender(ours.format(", timeout=5"), "us", lambda: build(TIMEOUT)),
        Contender(
            f"{peer} pass-through" if peer == "BaseHTTPMiddleware" else peer,
            "peer",
            lambda: build(PEER),
        ),
    ]


# ----------------------------------------------------------------------------- in process


def asgi_request(app: Any) -> Callable[[], Awaitable[None]]:
    """``await call()`` sends one GET into the ASGI *app*; raises unless it answers 200 ok."""
    template: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in HEADERS],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        pass

    async def call() -> None:
        await app(dict(template), receive, send)

    async def check() -> None:
        sent: list[Any] = []

        async def keep(message: Any) -> None:
            sent.append(message)

        await app(dict(template), receive, keep)
        body = b"".join(m.get("body", b"") for m in sent[1:])
        if sent[0].get("status") != 200 or body != BODY:
            msg = f"unexpected answer {sent!r:.200}"
            raise RuntimeError(msg)

    call.check = check  # type: ignore[attr-defined]
    return call


def wsgi_request(app: Any) -> Callable[[], None]:
    """``call()`` sends one GET into the WSGI *app*; raises unless it answers 200 ok."""
    template: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": PATH,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in HEADERS},
    }
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    def call() -> None:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO()
        result = app(environ, start_response)
        try:
            for _ in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    statuses.clear()
    call()
    if statuses != ["200 OK"]:
        msg = f"unexpected answer {statuses!r}"
        raise RuntimeError(msg)
    return call


def _calls_per_sample(per_call_ns: float, settings: Settings) -> int:
    target = settings.scale(SAMPLE_NS, SAMPLE_NS_QUICK)
    return max(20, min(settings.number, int(target / max(per_call_ns, 1.0))))


def _instances(settings: Settings) -> int:
    return settings.scale(INSTANCES, 1)


def _turns(settings: Settings) -> int:
    return settings.scale(TURNS, TURNS_QUICK)


def run_wsgi(settings: Settings, kind: str = "flask") -> list[Row]:
    """WSGI apps called in process, interleaved in shuffled turns (garbage collector off)."""
    variant = KINDS[kind][0]
    built = contenders(kind)
    timers: dict[str, tuple[list[timeit.Timer], int]] = {}
    failed: dict[str, Row] = {}
    for c in built:
        try:
            apps = [
                timeit.Timer("f()", timer=time.process_time, globals={"f": wsgi_request(c.build())})
                for _ in range(_instances(settings))
            ]
            per_call = min(t.timeit(200) for t in apps) * 1e9 / 200  # warm-up, calls per sample
            timers[c.library] = (apps, _calls_per_sample(per_call, settings))
        except Exception as exc:
            failed[c.library] = failed_row(TITLE, variant, c, UNIT, "lower", exc)
    samples: dict[str, list[float]] = {name: [] for name in timers}
    rng = random.Random(settings.seed)
    for turn in range(_turns(settings)):
        order = list(timers)
        rng.shuffle(order)
        for name in order:
            apps, number = timers[name]
            timer = apps[turn % len(apps)]
            samples[name].append(timer.timeit(number) * 1e9 / number)
    return sample_rows(TITLE, variant, built, samples, failed, paired=True, unit=UNIT)


async def _cpu_per_call(fn: Callable[[], Awaitable[None]], number: int) -> float:
    """CPU ns per ``await fn()``, yielding to the loop every CHUNK calls as bench_async does."""
    start = time.process_time_ns()
    for i in range(number):
        await fn()
        if not i % CHUNK:
            await asyncio.sleep(0)
    return (time.process_time_ns() - start) / number


async def _run_asgi(settings: Settings, kind: str) -> list[Row]:
    variant = KINDS[kind][0]
    built = contenders(kind)
    calls: dict[str, tuple[list[Callable[[], Awaitable[None]]], int]] = {}
    failed: dict[str, Row] = {}
    for c in built:
        try:
            apps = [asgi_request(c.build()) for _ in range(_instances(settings))]
            per_call = float("inf")
            for call in apps:
                await call.check()  # type: ignore[attr-defined]
                per_call = min(per_call, await _cpu_per_call(call, 200))  # warm-up
            calls[c.library] = (apps, _calls_per_sample(per_call, settings))
        except Exception as exc:
            failed[c.library] = failed_row(TITLE, variant, c, UNIT, "lower", exc)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    rng = random.Random(settings.seed)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for turn in range(_turns(settings)):
            order = list(calls)
            rng.shuffle(order)
            for name in order:
                apps, number = calls[name]
                samples[name].append(await _cpu_per_call(apps[turn % len(apps)], number))
    finally:
        if gc_was_enabled:
            gc.enable()
    return sample_rows(TITLE, variant, built, samples, failed, paired=True, unit=UNIT)


def run_asgi(settings: Settings, kind: str = "fastapi") -> list[Row]:
    """ASGI apps awaited in process, in one event loop (garbage collector off)."""
    return asyncio.run(_run_asgi(settings, kind))


# ----------------------------------------------------------------------------- real servers

REQUEST = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench/1.0\r\n\r\n".encode()


class Client:
    """A plain-socket HTTP/1.1 client: GET, read the answer, keep the connection if allowed.

    uvicorn keeps a connection alive; Werkzeug's server closes each one after its answer
    (``Connection: close``), so a Flask request also pays for a new connection.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock: socket.socket | None = None
        self._buffer = b""

    def get(self) -> None:
        """One GET; raises unless the answer is 200 with the expected body."""
        sock = self._sock
        if sock is None:
            sock = self._sock = socket.create_connection(("127.0.0.1", self._port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer = b""
        sock.sendall(REQUEST)
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self._recv(sock)
        status, *lines = buffer[:end].lower().split(b"\r\n")
        length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), -1)
        if not status.startswith(b"http/1.1 200") or length < 0:
            msg = f"unexpected answer {buffer[:200]!r}"
            raise RuntimeError(msg)
        body_end = end + 4 + length
        while len(buffer) < body_end:
            buffer += self._recv(sock)
        self._buffer = buffer[body_end:]
        if b"connection: close" in lines:
            self.close()

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        data = sock.recv(65536)
        if not data:
            msg = "the server closed the connection"
            raise RuntimeError(msg)
        return data

    def close(self) -> None:
        """Close the connection (the next GET opens another)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _server_rows(
    variant: str, built: Sequence[Contender], rps: dict[str, list[float]], failed: dict[str, Row]
) -> list[Row]:
    bare = built[0].library
    rows = []
    for c in built:
        if c.library in failed:
            rows.append(failed[c.library])
            continue
        note = c.note
        if c.library != bare and rps.get(bare):
            per_request = statistics.median(
                1 / m - 1 / b for m, b in zip(rps[c.library], rps[bare], strict=True)
            )
            note = f"{per_request * 1e6:+.1f} µs/request vs bare" + (f"; {note}" if note else "")
        rows.append(
            Row(
                case=SERVER_TITLE,
                variant=variant,
                library=c.library,
                role=c.role,
                value=statistics.median(rps[c.library]),
                unit=SERVER_UNIT,
                better="higher",
                note=note,
            )
        )
    return rows


def run_servers(settings: Settings) -> list[Row]:
    """Every contender of both frameworks behind its own server, started together."""
    rows: list[Row] = []
    plan = [("fastapi", "FastAPI + uvicorn"), ("flask", "Flask + Werkzeug (threaded)")]
    with contextlib.ExitStack() as stack:
        servers: dict[tuple[str, str], AppServer] = {}
        for framework, _ in plan:
            for c, kind in zip(
                contenders(framework), (BARE, FLOOR, OURS, TIMEOUT, PEER), strict=True
            ):
                server = AppServer(
                    300.0,
                    module="bench._mwserver",
                    args=("--framework", framework, "--variant", kind),
                )
                stack.callback(server.__exit__, None, None, None)
                server.start()
                servers[framework, c.library] = server
        for framework, variant in plan:
            rows += _drive(framework, variant, servers, settings)
    return rows


def _drive(
    framework: str, variant: str, servers: dict[tuple[str, str], AppServer], settings: Settings
) -> list[Row]:
    built = contenders(framework)
    clients: dict[str, Client] = {}
    failed: dict[str, Row] = {}
    try:
        for c in built:
            try:
                server = servers[framework, c.library].wait_ready()
                client = Client(server.port)
                clients[c.library] = client
                for _ in range(50):
                    client.get()  # warm-up
            except Exception as exc:
                failed[c.library] = failed_row(SERVER_TITLE, variant, c, SERVER_UNIT, "higher", exc)
                clients.pop(c.library, None)
        rps: dict[str, list[float]] = {name: [] for name in clients}
        rng = random.Random(settings.seed)
        for _ in range(settings.scale(BLOCKS, BLOCKS_QUICK)):
            order = list(clients)
            rng.shuffle(order)
            for name in order:
                get = clients[name].get
                start = time.perf_counter()
                for _ in range(BLOCK):
                    get()
                rps[name].append(BLOCK / (time.perf_counter() - start))
    finally:
        for client in clients.values():
            client.close()
    return _server_rows(variant, built, rps, failed)


def run(settings: Settings) -> list[Row]:
    """In process (FastAPI, Flask), then through real servers."""
    return [
        *run_asgi(settings, "fastapi"),
        *run_asgi(settings, "asgi"),
        *run_wsgi(settings, "flask"),
        *run_wsgi(settings, "wsgi"),
        *run_servers(settings),
    ]


CASES = [Case("middleware", "web middleware: FastAPI and Flask, in process and served", run)]
