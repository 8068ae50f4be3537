"""Helpers shared by several test modules (not collected: the name does not start with test_)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

REDIS_PORT = 6379


class TcpProxy:
    """A TCP proxy to Redis that a test can cut and restore (Redis itself keeps running)."""

    def __init__(self, target: int = REDIS_PORT) -> None:
        self.target = target
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port = server.getsockname()[1]
        self._server = server
        self._spawn(self._accept, server)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                downstream, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                downstream.close()
                return
            with self._lock:
                if self._server is not server:  # stopped meanwhile
                    downstream.close()
                    upstream.close()
                    return
                self._sockets += [downstream, upstream]
            self._spawn(self._pump, downstream, upstream)
            self._spawn(self._pump, upstream, downstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            sockets, self._sockets = self._sockets, []
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            server.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = []


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


# ---------------------------------------------------------------------------- Redis faults
# (added for the Redis robustness tests: latency and connection cuts on a TcpProxy)


class SlowTcpProxy(TcpProxy):
    """A `TcpProxy` that adds ``delay`` seconds of one-way latency and can `cut` connections.

    Latency is a delay line: each chunk leaves ``delay`` seconds after it arrived, without
    queueing chunks behind each other's delays (like a real link).
    """

    def __init__(self, target: int = REDIS_PORT) -> None:
        super().__init__(target)
        self.delay = 0.0
        self.commands = 0  # Redis commands the clients sent through the proxy
        self._count_lock = threading.Lock()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        if target is TcpProxy._pump:
            target = self._delayed_pump
        super()._spawn(target, *args)

    def _delayed_pump(self, src: socket.socket, dst: socket.socket) -> None:
        import queue

        line: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()

        def sender() -> None:
            while (item := line.get()) is not None:
                due, chunk = item
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    dst.sendall(chunk)
                except OSError:
                    return

        self._spawn(sender)
        # Data from a client (accepted on our port) is parsed to count its commands.
        counter = _RespCounter() if src.getsockname()[1] == self.port else None
        try:
            while data := src.recv(65536):
                if counter is not None:
                    sent = counter.feed(data)
                    with self._count_lock:
                        self.commands += sent
                line.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        line.put(None)
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Close every open connection now; new ones are still accepted."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
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
