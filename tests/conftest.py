"""Shared fixtures: real servers on 127.0.0.1 (in-process or as a subprocess), tokens, clients."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
import uvloop

from client_sdk import Client, mint_token
from server.app import App
from server.config import Config

SECRET = "test-secret-0123456789-0123456789-abcdef"
ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


# Every process a test starts inherits this mark (server processes pass it on to their
# workers), so what is left at the end is found even after it was re-parented to init.
SESSION_MARK = f"souk-tests-{uuid.uuid4().hex}"
os.environ["SOUK_TEST_SESSION"] = SESSION_MARK


def _left_behind() -> list[Any]:
    import psutil

    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if p.environ().get("SOUK_TEST_SESSION") == SESSION_MARK:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


# `make test` runs the suite in two processes (pytest-xdist, `--dist loadgroup`). The tests
# whose timing bounds need a core of their own (media peers, Chromium, the load-test
# scenarios) run one after another in one process; every other file is a group of its own
# (its fixtures stay in one process) and runs beside them.
SERIAL_DIRS = ("tests/browser/", "tests/media/", "tests/loadtest/")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = "serial" if path.startswith(SERIAL_DIRS) else path
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """The suite leaves no process behind (orphaned `--workers` once served a port forever):
    anything a test started that still runs at the end is killed, and the run fails."""
    yield
    deadline = time.monotonic() + 10
    left = _left_behind()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _left_behind()
    names = [" ".join(p.cmdline()[:4]) for p in left]
    for p in left:
        p.kill()
    assert not left, f"processes left behind by the tests: {names}"


def _port_range() -> range:
    """Ports below the kernel's ephemeral range (32768 up: clients' own ports never land
    here), a range per xdist worker, so two test processes never pick the same one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    start = 12000 + 2500 * (index % 8)
    return range(start, start + 2500)


_PORTS = _port_range()
_next_port = [random.randrange(len(_PORTS))]


def free_port() -> int:
    """A port nobody listens on now, from this process's own range, not reused soon."""
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_port[0] % len(_PORTS)]
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this test process's range")


def token(sub: str, role: str = "viewer", *, rooms: list[str] | None = None,
          groups: list[str] | None = None, name: str | None = None, ttl_s: int = 3600,
          secret: str = SECRET, **kw: Any) -> str:
    return mint_token(secret, sub, name=name or sub, role=role, rooms=rooms or ["*"],
                      groups=groups if groups is not None else [], ttl_s=ttl_s, **kw)


@dataclass
class Running:
    """An in-process server and how to reach it."""

    app: App
    url: str
    http: str

    def client(self, sub: str, role: str = "viewer", **kw: Any) -> Client:
        encoding = kw.pop("encoding", "msgpack")
        reconnect = kw.pop("reconnect", True)
        return Client(self.url, token(sub, role, **kw), encoding=encoding, reconnect=reconnect)


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    cfg = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data", secret=SECRET)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    app = App(make_config(tmp_path))
    await app.start()
    try:
        yield Running(app, f"ws://127.0.0.1:{app.cfg.port}/ws", f"http://127.0.0.1:{app.cfg.port}")
    finally:
        await app.stop()


@pytest.fixture
async def server_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start in-process servers with config overrides; all are stopped at the end."""
    apps: list[App] = []

    async def start(**overrides: Any) -> Running:
        sub = tmp_path / f"srv{len(apps)}"
        app = App(make_config(sub, **overrides))
        await app.start()
        apps.append(app)
        return Running(app, f"ws://127.0.0.1:{app.cfg.port}/ws", f"http://127.0.0.1:{app.cfg.port}")

    yield start
    for app in apps:
        await app.stop()


class ServerProcess:
    """`python -m server serve` as a real child process (for kill -9, SIGTERM, memory)."""

    def __init__(self, data_dir: Path, port: int | None = None, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra = list(extra)
        self.env = {**os.environ, "SOUK_SECRET": SECRET, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), *self.extra],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start in time")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    procs: list[ServerProcess] = []

    def start(*extra: str, port: int | None = None, data_dir: Path | None = None,
              env: dict[str, str] | None = None) -> ServerProcess:
        p = ServerProcess(data_dir or tmp_path / "data", port, *extra, env=env).start()
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


class PrivateRedis:
    """A redis-server of a test's own on a free 127.0.0.1 port: for tests that kill or
    restart Redis (the shared one on 6379 must never be restarted under other tests) and
    for a second bus shard."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is installed by .ci/ensure-services.sh"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("private redis-server did not come up")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    r = PrivateRedis(tmp_path)
    r.start()
    yield r
    if r.proc is not None and r.proc.poll() is None:
        r.kill()


@pytest.fixture(scope="session")
def shard_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A second Redis server for the bus's shard tests, shared by the session."""
    r = PrivateRedis(tmp_path_factory.mktemp("shard-redis"))
    r.start()
    r.wait_ready()
    yield r
    if r.proc is not None and r.proc.poll() is None:
        r.kill()


# ---- cluster scratch space: one PostgreSQL database and one Redis prefix per user ----------


def pg_execute(sql: str, dsn: str = PG + "/postgres") -> None:
    """Run one statement in a thread of its own (its own event loop): callable from sync
    fixtures of any scope whatever loop the tests run on."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh PostgreSQL database (its DSN), dropped afterwards: engineers and CI running
    tests at once on one PostgreSQL never share tables."""
    name = f"souk_test_{uuid.uuid4().hex[:10]}"
    pg_execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        pg_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def scratch_schema(database: str) -> str:
    """A fresh schema in `database`; the DSN that makes it the search path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    pg_execute(f"CREATE SCHEMA {schema}", database)
    return f"{database}?search_path={schema}"


@contextmanager
def scratch_prefix() -> Iterator[str]:
    """A fresh Redis key prefix (a cluster of its own on the shared Redis), its keys deleted
    afterwards."""
    p = f"souk-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield p
    finally:
        r = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(r.scan_iter(match=p + "*"))
            if keys:
                r.delete(*keys)
        finally:
            r.close()


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of the test's own (DSN)."""
    with scratch_database() as dsn:
        yield dsn


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis prefix of the test's own."""
    with scratch_prefix() as p:
        yield p


def png(width: int = 8, height: int = 8) -> bytes:
    """A small valid PNG (solid colour), made here rather than shipped: for the upload tests."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xfe\x2c\x55" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
