"""Helpers shared by several test modules (not collected: the name does not start with test_)."""

from __future__ import annotations

import queue
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

REDIS_PORT = 6379


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of the port *target* (Redis's by default).

    ``start()`` listens (on the same port again after a ``stop()``: a test takes the link
    down and brings it back while the server keeps running); ``stop()`` closes the listener
    and every connection and waits for the threads. On top of plain forwarding:

    - ``cut()`` closes every live connection but keeps accepting new ones (a network blip:
      clients reconnect at once);
    - ``freeze()`` holds every byte back in both directions until ``thaw()`` (bytes held
      when a ``cut()`` comes are dropped);
    - ``delay``: seconds of one-way latency, changeable at any time. It is a delay line: each
      chunk leaves ``delay`` seconds after it arrived, without queueing chunks behind each
      other's delays (like a real link);
    - ``count_commands=True``: ``commands`` counts the Redis commands the clients send;
    - *fates* (name -> weight): each accepted connection draws one fate from a random source
      seeded with *seed*; ``fates_seen`` counts them. Fates:

      - ``"pass"``: forward both ways untouched;
      - ``"cut"``: forward the request; when the answer starts, close both sides before any
        of it reaches the client (the server acted, the client saw nothing);
      - ``"truncate"``: forward only the answer's first *truncate_at* bytes, then close;
      - ``"stall"``: forward the request, swallow the answer (the client times out);
      - ``"refuse"``: close the connection at once, before reading anything.

      Use fates with clients that open one connection per request (no keep-alive), so that
      each attempt meets its own fate.
    """

    def __init__(
        self,
        target: int = REDIS_PORT,
        *,
        count_commands: bool = False,
        fates: dict[str, float] | None = None,
        seed: int = 0,
        truncate_at: int = 40,
    ) -> None:
        self.target = target
        self.port = 0
        self.delay = 0.0
        self.commands = 0
        self.truncate_at = truncate_at
        self.fates_seen: dict[str, int] = dict.fromkeys(fates or {}, 0)
        self._fates = fates or {}
        self._random = random.Random(seed)
        self._count_commands = count_commands
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self._links: set[_Link] = set()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port), backlog=128)
        self.port = server.getsockname()[1]
        with self._lock:
            self._server = server
        self._spawn(self._accept, server)

    def cut(self) -> int:
        """Close every live connection (the listener stays); return how many were cut."""
        with self._lock:
            links, self._links = self._links, set()
        for link in links:
            link.close()
        return len(links)

    def freeze(self) -> None:
        """Hold every byte back from now on."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again (what was held goes through, unless the connection was cut)."""
        self._flowing.set()

    def stop(self) -> None:
        """Close the listener and every connection; wait (5 s at most) for the threads."""
        self._flowing.set()
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            _close(server)  # wakes the thread blocked in accept()
        self.cut()
        deadline = time.monotonic() + 5
        while True:  # threads started meanwhile (a connection accepted as we stopped) too
            with self._lock:
                threads, self._threads = self._threads, []
            if not threads:
                return
            for thread in threads:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                downstream, _ = server.accept()
            except OSError:
                return
            fate = self._draw_fate()
            if fate == "refuse":
                _close(downstream)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(downstream)
                continue
            link = _Link(downstream, upstream, fate)
            with self._lock:
                stopped = self._server is not server
                if not stopped:
                    self._links.add(link)
            if stopped:
                link.close()
                return
            self._spawn(self._pump, link, downstream, upstream)
            self._spawn(self._pump, link, upstream, downstream)

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        """Forward *src* to *dst* until either ends; then end the whole connection."""
        counter = _RespCounter() if self._count_commands and src is link.downstream else None
        fate = link.fate if src is link.upstream else "pass"  # fates act on the answer
        line: _DelayLine | None = None
        try:
            while data := src.recv(65536):
                if counter is not None:
                    sent = counter.feed(data)
                    with self._lock:
                        self.commands += sent
                if fate == "stall":
                    continue
                if fate == "cut" or not self._wait_flowing(link):
                    break  # (or cut while frozen: drop what was held)
                if fate == "truncate":
                    data = data[: self.truncate_at]
                if line is None and self.delay > 0:
                    line = _DelayLine(dst, self._spawn)  # from now on, to keep the order
                if line is not None:
                    line.put(data, self.delay)
                else:
                    dst.sendall(data)
                if fate == "truncate":
                    break
        except OSError:
            pass
        finally:
            if line is not None:
                line.close()
            self._finish(link)

    def _draw_fate(self) -> str:
        if not self._fates:
            return "pass"
        with self._lock:
            fate = self._random.choices(list(self._fates), list(self._fates.values()))[0]
            self.fates_seen[fate] += 1
        return fate

    def _wait_flowing(self, link: _Link) -> bool:
        """Wait while frozen; False when the connection was cut meanwhile."""
        while not self._flowing.wait(0.05):
            if link.closed():
                return False
        return True

    def _finish(self, link: _Link) -> None:
        """One direction ended: the peers see the end; the last one out closes the sockets."""
        link.shutdown()
        with self._lock:
            link.pumps -= 1
            last = link.pumps == 0
            if last:
                self._links.discard(link)
        if last:
            link.close()


class _Link:
    """One proxied connection: the client's socket, the server's, the connection's fate and
    how many of its two pumps still run."""

    def __init__(self, downstream: socket.socket, upstream: socket.socket, fate: str) -> None:
        self.downstream = downstream
        self.upstream = upstream
        self.fate = fate
        self.pumps = 2

    def shutdown(self) -> None:
        for sock in (self.downstream, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        _close(self.downstream)
        _close(self.upstream)

    def closed(self) -> bool:
        return self.downstream.fileno() == -1 or self.upstream.fileno() == -1


class _DelayLine:
    """Sends chunks to *dst* in order, each when its delay is over, from a thread of its own."""

    def __init__(self, dst: socket.socket, spawn: Callable[..., None]) -> None:
        self._dst = dst
        self._queue: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()
        spawn(self._send)

    def put(self, data: bytes, delay: float) -> None:
        self._queue.put((time.monotonic() + delay, data))

    def close(self) -> None:
        """No more chunks: the thread ends after the last one."""
        self._queue.put(None)

    def _send(self) -> None:
        while (item := self._queue.get()) is not None:
            due, chunk = item
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                self._dst.sendall(chunk)
            except OSError:
                return


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _RespCounter:
    """Counts the commands in a client's RESP stream (arrays of bulk strings, as redis-py sends)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> int:
        """Take the next bytes; return how many commands they completed."""
        self._buffer += data
        count = 0
        while (end := self._command_end(self._buffer)) is not None:
            self._buffer = self._buffer[end:]
            count += 1
        return count

    @staticmethod
    def _command_end(buffer: bytes) -> int | None:
        line_end = buffer.find(b"\r\n")
        if not buffer.startswith(b"*") or line_end < 0:
            return None
        position = line_end + 2
        for _ in range(int(buffer[1:line_end])):
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            position = line_end + 2 + int(buffer[position + 1 : line_end]) + 2
            if position > len(buffer):
                return None
        return position


@contextmanager
def serve_asgi(app: Any, **config: Any) -> Iterator[str]:
    """Run *app* under a real uvicorn in a thread on 127.0.0.1 and a free port; yield its URL.

    *config* adds or overrides `uvicorn.Config` settings (e.g. ``http="h11"``).
    """
    import uvicorn

    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "ws": "none",
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    give_up = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > give_up or not thread.is_alive():
            msg = "uvicorn did not start"
            raise RuntimeError(msg)
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


# --------------------------------------------------------------------------- faulty peers
# Loopback servers that misbehave on purpose, for the httpx transport tests.


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Run *app* under Werkzeug's threaded server in a thread on 127.0.0.1; yield its URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(15)


@contextmanager
def serve_drip(
    head: bytes, drip: list[bytes], *, every: float, connections: int = 4
) -> Iterator[str]:
    """A raw HTTP server on 127.0.0.1 that sends *head* at once, then each piece of *drip*
    *every* seconds (a slow-drip upstream); serves at most *connections* connections."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def handle(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(head)
            for piece in drip:
                if stop.wait(every):
                    break
                conn.sendall(piece)
        except OSError:
            pass
        finally:
            _close(conn)

    def accept() -> None:
        for _ in range(connections):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            thread = threading.Thread(target=handle, args=(conn,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    finally:
        stop.set()
        _close(server)
        acceptor.join(5)
        for thread in threads:
            thread.join(5)


# --- slow clients for the integrations' tests ---


def port_of(url: str) -> int:
    """The port of a ``http://127.0.0.1:<port>`` URL."""
    return int(url.rsplit(":", 1)[1])


class SlowUpload:
    """A raw-socket POST whose body trickles in: it declares *length* bytes, sends them one
    at a time every *interval* seconds, and reads the answer once done (or when stopped).

    Bounded: at most *length* bytes and ``length * interval`` seconds, plus *read_timeout*.
    """

    def __init__(
        self,
        url: str,
        *,
        path: str = "/upload",
        length: int = 100,
        interval: float = 0.05,
        read_timeout: float = 15.0,
    ) -> None:
        self.port = port_of(url)
        self.path = path
        self.length = length
        self.interval = interval
        self.read_timeout = read_timeout
        self.answer = b""
        self.sent = 0
        self.headers_sent = threading.Event()
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SlowUpload:
        self._thread.start()
        return self

    def _run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.read_timeout) as s:
            head = (
                f"POST {self.path} HTTP/1.1\r\nHost: test\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {self.length}\r\n"
            )
            s.sendall(head.encode() + b"\r\n")
            self.headers_sent.set()
            try:
                for _ in range(self.length):
                    readable, _, _ = select.select([s], [], [], self.interval)
                    if self.stop.is_set():
                        return  # the test is done with it: hang up without an answer
                    if readable:
                        break  # an early answer (or a close)
                    s.sendall(b"a")
                    self.sent += 1
            except OSError:
                pass  # the server closed: what it said before is still readable
            self.answer = read_answer(s)

    @property
    def status_line(self) -> str:
        """The first line of the answer ('' when none came)."""
        return self.answer.split(b"\r\n", 1)[0].decode("latin-1")

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until the whole body is sent and the answer read (or the thread gave up)."""
        self._thread.join(timeout)

    def join(self, timeout: float = 30.0) -> None:
        """Stop trickling and wait for the thread."""
        self.stop.set()
        self._thread.join(timeout)


def read_answer(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """Read one HTTP answer from *sock*: up to the end of its Content-Length body, the end of
    the connection, or *limit* bytes (whatever comes first; the socket's timeout applies)."""
    data = b""
    try:
        while len(data) < limit:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length" and len(body) >= int(value):
                        return data
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass  # reset or timed out: what came before is the answer
    return data


# -- RabbitMQ (messaging tests) -------------------------------------------------------------

AMQP_PORT = 5672


def amqp_url(port: int = AMQP_PORT) -> str:
    """The test broker's URL (guest/guest on 127.0.0.1), optionally through a proxy's port."""
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def rabbitmq_up() -> bool:
    """True when something listens on the RabbitMQ port of 127.0.0.1."""
    try:
        with socket.create_connection(("127.0.0.1", AMQP_PORT), timeout=0.5):
            return True
    except OSError:
        return False


# -- Fake LLM APIs (SDK tests) ---------------------------------------------------------------
# Endpoints shaped like OpenAI's, Anthropic's and Gemini's, on a real uvicorn, so the SDKs run
# unchanged against 127.0.0.1 and each attempt they (or our transports) make is recorded.


class LLMAttempt:
    """One request the fake LLM server received."""

    __slots__ = (
        "api",
        "at",
        "body",
        "headers",
        "idempotency_key",
        "method",
        "path",
        "retry_count",
        "stream",
    )

    def __init__(
        self,
        *,
        api: str,
        method: str,
        path: str,
        idempotency_key: str | None,
        retry_count: str | None,
        stream: bool,
        at: float,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        self.api = api
        self.headers = headers
        self.body = body
        self.method = method
        self.path = path
        self.idempotency_key = idempotency_key
        self.retry_count = retry_count
        self.stream = stream
        self.at = at

    def __repr__(self) -> str:
        return (
            f"LLMAttempt({self.method} {self.path}, key={self.idempotency_key!r}, "
            f"retry_count={self.retry_count!r}, stream={self.stream})"
        )


class FakeLLM:
    """An ASGI app answering like OpenAI (``POST /v1/chat/completions``), Anthropic
    (``POST /v1/messages``) and Gemini (``POST /v1beta/models/<m>:generateContent`` and
    ``:streamGenerateContent``), scriptable per test.

    `script` queues what the next attempts get, one step each (then ``"ok"``):

    - ``"ok"``: the API's normal answer (server-sent events when the request asks to stream:
      `chunks` events, the first at once, then one every `chunk_delay` seconds);
    - ``"429"``, ``"503"``... (any status): the API's error body; ``"429:2"`` adds
      ``Retry-After: 2``;
    - ``"cut"``: a 200 that declares its Content-Length, sends half of the body and closes
      the connection;
    - ``"sleep:2"``: the normal answer after 2 s (sooner if the client hangs up meanwhile,
      then no answer).

    With *retry_after_ms*, error answers also carry ``retry-after-ms`` (the header the
    OpenAI and Anthropic SDKs read first), which keeps the SDKs' own waits short in tests.
    Every attempt is recorded in `attempts` (its Idempotency-Key and x-stainless-retry-count).
    Serve it with `serve_llm`.
    """

    def __init__(
        self, *, chunks: int = 4, chunk_delay: float = 0.2, retry_after_ms: int | None = None
    ) -> None:
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.retry_after_ms = retry_after_ms
        self.attempts: list[LLMAttempt] = []
        self._steps: list[str] = []
        self._lock = threading.Lock()

    def script(self, *steps: str) -> None:
        """Queue what the next attempts get, in order (after them: ``"ok"``)."""
        with self._lock:
            self._steps.extend(steps)

    def reset(self) -> None:
        """Forget the attempts and drop what is still scripted."""
        with self._lock:
            self._steps.clear()
            self.attempts.clear()

    def keys(self) -> list[str | None]:
        """The Idempotency-Key of each attempt so far."""
        return [attempt.idempotency_key for attempt in self.attempts]

    def _next_step(self) -> str:
        with self._lock:
            return self._steps.pop(0) if self._steps else "ok"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import json

        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        if path.endswith("/chat/completions"):
            api = "openai"
        elif path.endswith("/messages"):
            api = "anthropic"
        elif ":generatecontent" in path.lower() or ":streamgeneratecontent" in path.lower():
            api = "gemini"
        else:
            await _send_json(send, 404, {"error": f"no route {path}"})
            return
        stream = (
            ":streamGenerateContent" in path
            if api == "gemini"
            else bool(isinstance(payload, dict) and payload.get("stream"))
        )
        self.attempts.append(
            LLMAttempt(
                api=api,
                method=scope["method"],
                path=path,
                idempotency_key=headers.get("idempotency-key"),
                retry_count=headers.get("x-stainless-retry-count"),
                stream=stream,
                at=time.monotonic(),
                headers=headers,
                body=body,
            )
        )
        step = self._next_step()
        if step.startswith("sleep:"):
            import asyncio

            try:
                # receive() returns at once if the client hangs up: then stop waiting.
                message = await asyncio.wait_for(receive(), float(step[6:]))
            except TimeoutError:
                step = "ok"
            else:
                if message["type"] == "http.disconnect":
                    return
                step = "ok"
        if step == "ok":
            if stream:
                await self._stream(send, api)
            else:
                await _send_json(send, 200, _llm_answer(api))
        elif step == "cut":
            data = json.dumps(_llm_answer(api)).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data[: len(data) // 2]})
            # Returning with the body unfinished makes uvicorn close the connection.
            raise _CutConnection
        else:
            status, _, retry_after = step.partition(":")
            extra = [(b"retry-after", retry_after.encode())] if retry_after else []
            if self.retry_after_ms is not None:
                extra.append((b"retry-after-ms", str(self.retry_after_ms).encode()))
            await _send_json(send, int(status), _llm_error(api, int(status)), extra)

    async def _stream(self, send: Any, api: str) -> None:
        import asyncio

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        events = _llm_events(api, self.chunks)
        for index, event in enumerate(events):
            if index and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


class _CutConnection(Exception):
    """Raised inside the fake LLM app to make uvicorn drop a connection mid-body."""


async def _send_json(
    send: Any, status: int, payload: object, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    import json

    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _llm_answer(api: str, text: str = "Hello from the fake model.") -> dict[str, Any]:
    if api == "openai":
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9},
        }
    if api == "anthropic":
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "fake-model",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 6},
        }
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 6},
    }


def _llm_error(api: str, status: int) -> dict[str, Any]:
    message = f"fake error {status}"
    if api == "openai":
        return {"error": {"message": message, "type": "server_error", "code": None}}
    if api == "anthropic":
        kind = "rate_limit_error" if status == 429 else "overloaded_error"
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"code": status, "message": message, "status": "UNAVAILABLE"}}


def _llm_events(api: str, chunks: int) -> list[bytes]:
    """The server-sent events of a streamed answer of *chunks* text pieces."""
    import json

    def data(payload: object, event: str | None = None) -> bytes:
        head = f"event: {event}\n" if event else ""
        return f"{head}data: {json.dumps(payload)}\n\n".encode()

    pieces = [f"piece{i} " for i in range(chunks)]
    if api == "openai":
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1}
        base["model"] = "fake-model"
        events = [
            data(
                {**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
            )
            for p in pieces
        ]
        events[-1] += data(
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        )
        events[-1] += b"data: [DONE]\n\n"
        return events
    if api == "anthropic":
        start = {
            "type": "message_start",
            "message": {**_llm_answer(api), "content": [], "stop_reason": None},
        }
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        events = [
            data(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
                "content_block_delta",
            )
            for p in pieces
        ]
        events[0] = data(start, "message_start") + data(block, "content_block_start") + events[0]
        events[-1] += data({"type": "content_block_stop", "index": 0}, "content_block_stop")
        events[-1] += data(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 6},
            },
            "message_delta",
        )
        events[-1] += data({"type": "message_stop"}, "message_stop")
        return events
    return [
        data({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}}]})
        for p in pieces
    ]


@contextmanager
def serve_llm(app: FakeLLM | None = None) -> Iterator[tuple[str, FakeLLM]]:
    """Serve a `FakeLLM` (a new one by default) on 127.0.0.1; yield its URL and the app.

    Its errors log at "critical" only: a cut connection is on purpose, not news.
    """
    fake = app if app is not None else FakeLLM()
    with serve_asgi(fake, log_level="critical") as url:
        yield url, fake
