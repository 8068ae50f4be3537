"""One breaker shared by several OS processes through the real Redis on 127.0.0.1:6379.

Workers are started with the "spawn" method and driven over pipes; each owns a `RedisStore`
and a breaker with the same name, and timestamps the state changes it sees with
`time.monotonic()` (CLOCK_MONOTONIC is the same clock in every process on Linux).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from tests.helpers import TcpProxy  # noqa: E402  # after the skip when redis is missing

pytestmark = [pytest.mark.redis]

WORKERS = 3
OPEN_DURATION = 1.0


def worker(conn: Connection, prefix: str, name: str, port: int) -> None:
    """A process with one shared breaker, obeying commands sent over *conn*."""
    from resilience import CircuitBreaker, CircuitOpenError
    from resilience._observe._events import CircuitStateChanged, Event
    from resilience.stores import RedisStore

    store = RedisStore(redis.Redis(port=port), prefix=prefix, sync_interval=0.05, timeout=0.5)
    breaker = CircuitBreaker(name, store=store, consecutive_failures=3, open_duration=OPEN_DURATION)
    seen: list[tuple[str, float]] = []

    def listener(event: Event) -> None:
        if isinstance(event, CircuitStateChanged):
            seen.append((event.new_state, time.monotonic()))

    breaker.add_listener(listener)
    store.sync()
    conn.send("ready")
    while True:
        command, *args = conn.recv()
        if command == "stop":
            store.close()
            conn.send("stopped")
            return
        if command == "fail":
            for _ in range(args[0]):
                try:
                    breaker.call(_boom)
                except (ZeroDivisionError, CircuitOpenError):
                    pass
            conn.send((breaker.state.value, time.monotonic()))
        elif command == "wait_state":
            target, timeout = args
            deadline = time.monotonic() + timeout
            while breaker.state.value != target and time.monotonic() < deadline:
                time.sleep(0.002)
            at = next((t for state, t in reversed(seen) if state == target), None)
            conn.send((breaker.state.value, at))
        elif command == "probe":
            try:
                breaker.call(time.sleep, args[0])
            except CircuitOpenError:
                conn.send("rejected")
            else:
                conn.send("ran")
        elif command in ("force_open", "disable", "reset"):
            getattr(breaker, command)()
            conn.send(time.monotonic())
        elif command == "healthy":
            target, timeout = args
            deadline = time.monotonic() + timeout
            while store.healthy != target and time.monotonic() < deadline:
                time.sleep(0.01)
            conn.send(store.healthy)
        elif command == "succeed":
            count = 0
            for _ in range(args[0]):
                try:
                    breaker.call(int)
                except CircuitOpenError:
                    continue
                count += 1
            conn.send(count)


def _boom() -> None:
    raise ZeroDivisionError


class Fleet:
    """Worker processes sharing breaker *name*; `ask` sends one command to some of them."""

    def __init__(self, prefix: str, name: str, size: int = WORKERS, port: int = 6379) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(size):
            parent, child = context.Pipe()
            proc = context.Process(target=worker, args=(child, prefix, name, port), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            assert conn.poll(60), "worker did not start"
            assert conn.recv() == "ready"

    def ask(self, *command: Any, who: list[int] | None = None, timeout: float = 30) -> list[Any]:
        targets = [self.conns[i] for i in (who if who is not None else range(len(self.conns)))]
        for conn in targets:  # all at once: the workers act concurrently
            conn.send(command)
        replies = []
        for conn in targets:
            assert conn.poll(timeout), f"worker did not answer {command!r}"
            replies.append(conn.recv())
        return replies

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if proc.is_alive():
                try:
                    conn.send(("stop",))
                    if conn.poll(10):
                        conn.recv()
                except (BrokenPipeError, EOFError, OSError):
                    pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of the test's own, deleted afterwards (skips without Redis)."""
    client = redis.Redis(socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        client.close()
        pytest.skip("no Redis on 127.0.0.1:6379")
    value = f"test-resilience-mp:{uuid.uuid4().hex[:10]}:"
    yield value
    keys = list(client.scan_iter(match=f"{value}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def fleet(prefix: str) -> Iterator[Fleet]:
    """Three processes sharing one breaker."""
    group = Fleet(prefix, "mp-breaker")
    yield group
    group.close()


def test_trip_is_seen_by_every_process(fleet: Fleet) -> None:
    """Failures in one process open the breaker in all of them within 1 s (goal 100 ms)."""
    [(state, tripped_at)] = fleet.ask("fail", 3, who=[0])
    assert state == "open"
    seen = fleet.ask("wait_state", "open", 5.0, who=[1, 2])
    assert [state for state, _ in seen] == ["open", "open"]
    delays = [at - tripped_at for _, at in seen]
    assert max(delays) < 1.0, delays


def test_one_probe_in_the_whole_fleet(fleet: Fleet) -> None:
    """After open_duration, the three processes try at once: exactly one probe runs."""
    fleet.ask("fail", 3, who=[0])
    fleet.ask("wait_state", "open", 5.0)
    time.sleep(OPEN_DURATION + 0.2)
    outcomes = fleet.ask("probe", 0.5)
    assert sorted(outcomes) == ["ran", "rejected", "rejected"]
    # The probe succeeded: the whole fleet closes.
    assert [state for state, _ in fleet.ask("wait_state", "closed", 5.0)] == ["closed"] * 3


def test_manual_control_reaches_every_process(fleet: Fleet) -> None:
    """force_open, disable and reset in any process apply in all of them."""
    for who, command, expected in (
        (0, "force_open", "forced_open"),
        (1, "disable", "disabled"),
        (2, "reset", "closed"),
    ):
        fleet.ask(command, who=[who])
        states = [state for state, _ in fleet.ask("wait_state", expected, 5.0)]
        assert states == [expected] * 3, command
    assert fleet.ask("succeed", 10) == [10, 10, 10]


def test_redis_outage_mid_run(prefix: str) -> None:
    """Redis cut under three processes: calls go on, local trips work; back: state rejoins."""
    proxy = TcpProxy()  # a proxy this test can cut; Redis itself keeps running
    proxy.start()
    group = Fleet(prefix, "mp-outage", port=proxy.port)
    try:
        proxy.stop()
        assert group.ask("healthy", False, 10.0) == [False] * 3
        assert group.ask("succeed", 500) == [500] * 3  # no caller saw a Redis error
        [(state, _)] = group.ask("fail", 3, who=[0])
        assert state == "open"  # worker 0 protects itself on local state
        assert [s for s, _ in group.ask("wait_state", "open", 0.3, who=[1, 2])] == ["closed"] * 2
        proxy.start()
        assert group.ask("healthy", True, 10.0) == [True] * 3
        # Worker 0's trip is published on rejoin (the fleet did not move meanwhile).
        assert [s for s, _ in group.ask("wait_state", "open", 5.0)] == ["open"] * 3
    finally:
        group.close()
        proxy.stop()
