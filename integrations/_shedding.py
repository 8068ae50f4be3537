"""Load shedding: the count of requests in progress, and the body a request reads first.

A request takes a ``max_concurrent`` slot once its body has arrived, so a slow client holds
memory (up to ``body_buffer``) but no slot. A body larger than the buffer takes its slot
late, on the first read past the buffered part (`LateSlot`). The readers below do this for
each server protocol: ASGI (`read_asgi_body`, `replay`, `LateASGIBody`) and WSGI
(`wsgi_body_length`, `read_wsgi_body`, `SlotOnRead`).
"""

from __future__ import annotations

import io
import selectors
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ._answers import Answer, ShedRequest, send_answer
from ._inbound import content_length

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from starlette.types import Message, Receive, Send

    from resilience._validate import Clock

__all__ = [
    "ConcurrencyLimiter",
    "LateASGIBody",
    "LateSlot",
    "SlotOnRead",
    "read_asgi_body",
    "read_wsgi_body",
    "replay",
    "wsgi_body_length",
]


class ConcurrencyLimiter:
    """Counts requests in progress and refuses one beyond the limit, at once (no waiting).

    Thread-safe, so one limiter serves a threaded WSGI server as well as an event loop; the
    lock is held for a counter update only, never while a request runs.

    Example:
        >>> limiter = ConcurrencyLimiter(1)
        >>> limiter.try_acquire(), limiter.try_acquire()
        (True, False)
        >>> limiter.release(); limiter.in_flight
        0
    """

    __slots__ = ("_lock", "in_flight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take a slot if one is free; False means shed this request."""
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        """Give back a slot taken by `try_acquire`."""
        with self._lock:
            self.in_flight -= 1


class LateSlot:
    """The slot of a request whose body is larger than the buffer: taken on the first read
    past the buffer (`try_take`, or `take`, which raises `ShedRequest` when none is free),
    given back once.

    Example:
        >>> limiter = ConcurrencyLimiter(1)
        >>> slot = LateSlot(limiter)
        >>> slot.take(); slot.take(); limiter.in_flight
        1
        >>> slot.give_back(); slot.give_back(); limiter.in_flight
        0
    """

    __slots__ = ("held", "limiter")

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self.limiter = limiter
        self.held = False

    def try_take(self) -> bool:
        """Hold a slot from now on; False if none is free (True when held already)."""
        if not self.held:
            self.held = self.limiter.try_acquire()
        return self.held

    def take(self) -> None:
        """Hold a slot from now on (no-op when held already); `ShedRequest` if none is free."""
        if not self.try_take():
            msg = "no max_concurrent slot was free for this request's body"
            raise ShedRequest(msg)

    def give_back(self) -> None:
        """Release the slot if this request holds one."""
        if self.held:
            self.held = False
            self.limiter.release()


# ============================================================================ ASGI bodies


async def read_asgi_body(receive: Receive, limit: int) -> Message | None:
    """Read the body until it ends or passes *limit* bytes, as one message; None: client gone.

    The message's ``more_body`` says whether more is still to come.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunk: bytes = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        more: bool = message.get("more_body", False)
        if not more or size > limit:
            return {"type": "http.request", "body": b"".join(chunks), "more_body": more}


def replay(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that hands out the buffered body, then reads on (disconnect messages)."""
    pending = [first]

    async def replaying() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replaying


_DISCONNECT: Final[Message] = {"type": "http.disconnect"}


class LateASGIBody:
    """``receive`` and ``send`` for a request whose body is larger than the buffer.

    The first read past the buffered part (*first*, None when nothing was buffered) takes
    the request's slot. When none is free the client gets the 503 at once, and the app is
    told the client has gone (``http.disconnect``): an exception raised from ``receive``
    would not do, as frameworks turn errors in body parsing into their own 400. Whatever
    the app sends afterwards is dropped.
    """

    __slots__ = ("_first", "_receive", "_send", "_shed", "answered", "head", "slot", "started")

    def __init__(
        self,
        first: Message | None,
        receive: Receive,
        send: Send,
        limiter: ConcurrencyLimiter,
        shed: Answer,
        *,
        head: bool,
    ) -> None:
        self._first = first
        self._receive = receive
        self._send = send
        self._shed = shed
        self.slot = LateSlot(limiter)
        self.head = head
        self.answered = False
        self.started = False

    async def receive(self) -> Message:
        """The buffered part, then the rest once the slot is held (else a disconnect)."""
        first = self._first
        if first is not None:
            self._first = None
            return first
        if self.answered:
            return _DISCONNECT
        if not self.slot.held and not self.slot.try_take():
            if not self.started:
                self.answered = True
                await send_answer(self._send, self._shed, head=self.head)
            return _DISCONNECT
        return await self._receive()

    async def send(self, message: Message) -> None:
        """Pass the app's message on, unless the client already has its 503."""
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


# ============================================================================ WSGI bodies

_READ_CHUNK: Final = 64 * 1024


def wsgi_body_length(environ: WSGIEnvironment) -> int:
    """The body's declared length: 0 for none (or unreadable), -1 for chunked."""
    length = content_length(environ.get("CONTENT_LENGTH"))
    if length:
        return length
    # A chunked body can be read only when the server ends the stream for us.
    if (
        environ.get("wsgi.input_terminated")
        and "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    ):
        return -1
    return 0


def read_wsgi_body(
    environ: WSGIEnvironment, length: int, limit: int, give_up_at: float, clock: Clock
) -> tuple[bytes, bool]:
    """Read the body (*length* bytes, or up to *limit* + 1 of a chunked one) by *give_up_at*.

    Returns the bytes and whether they are the whole body; raises `TimeoutError` when time
    runs out. On Werkzeug's server a body with a length is read without blocking, waiting
    for the socket at most until *give_up_at*; elsewhere the clock is checked between reads
    (a read that gets nothing is bounded by the server's own timeout).
    """
    stream = environ["wsgi.input"]
    want = length if length > 0 else limit + 1  # one byte past the buffer says "larger"
    read1 = getattr(stream, "read1", None)
    sock = environ.get("werkzeug.socket")
    if read1 is not None and isinstance(sock, socket.socket):
        body = _read_ready(read1, sock, want, give_up_at, clock)
    else:
        body = _read_blocking(stream.read, want, give_up_at, clock)
    return body, length > 0 or len(body) < want


def _read_ready(
    read1: Callable[[int], bytes],
    sock: socket.socket,
    want: int,
    give_up_at: float,
    clock: Clock,
) -> bytes:
    # Non-blocking reads plus a bounded wait for the socket: a socket timeout would do, but
    # once one fires the server's reader refuses every later read (its cleanup then fails).
    chunks: list[bytes] = []
    size = 0
    ready = False
    previous = sock.gettimeout()
    sock.setblocking(False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while size < want:
                try:
                    chunk = read1(min(want - size, _READ_CHUNK))
                except ssl.SSLWantReadError:  # part of a TLS record: wait for the rest
                    chunk, ready = b"", False
                if chunk:
                    chunks.append(chunk)
                    size += len(chunk)
                    ready = False
                    continue
                if ready:
                    break  # readable, yet nothing to read: the client closed its side
                left = give_up_at - clock()
                if left <= 0.0 or not selector.select(left):
                    raise TimeoutError
                ready = True
    finally:
        sock.settimeout(previous)
    return b"".join(chunks)


def _read_blocking(
    read: Callable[[int], bytes], want: int, give_up_at: float, clock: Clock
) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < want:
        if clock() >= give_up_at:
            raise TimeoutError
        chunk = read(min(want - size, _READ_CHUNK))
        if not chunk:
            break  # the end (or the client left: Flask then answers 400)
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class SlotOnRead(io.RawIOBase):
    """``wsgi.input`` for a body larger than the buffer: the buffered bytes first, then the
    rest of the stream, whose first read takes the request's slot (or raises `ShedRequest`).
    """

    def __init__(self, stream: Any, buffered: bytes, slot: LateSlot) -> None:
        super().__init__()
        self._stream = stream
        self._head = io.BytesIO(buffered)
        self._slot = slot

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            head = self._head.read()
            self._slot.take()
            rest: bytes = self._stream.read()
            return head + rest
        head = self._head.read(size)
        if head or size == 0:
            return head
        self._slot.take()
        data: bytes = self._stream.read(size)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        head = self._head.readline(-1 if size is None else size)
        if head.endswith(b"\n") or (size is not None and 0 <= size <= len(head)):
            return head
        self._slot.take()
        rest = -1 if size is None or size < 0 else size - len(head)
        line: bytes = self._stream.readline(rest)
        return head + line
