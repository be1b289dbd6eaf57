"""`--workers`: the workers die with their supervisor, however it dies, and nothing is left
behind (a killed supervisor used to leave its workers serving the shared port forever)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable

import psutil
import pytest

from tests.conftest import REDIS_URL, ServerProcess, free_port

pytestmark = pytest.mark.scaleout


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def _workers(proc: ServerProcess, port: int, n: int) -> list[int]:
    assert proc.proc is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.proc.pid).children()
        listening = [k for k in kids
                     if any(c.status == "LISTEN" and c.laddr.port == port for c in k.net_connections())]
        if len(listening) == n:
            return [k.pid for k in listening]
        await asyncio.sleep(0.1)
    raise AssertionError("the workers did not start")


async def test_workers_die_with_a_killed_supervisor(server_process: Callable[..., ServerProcess]) -> None:
    port = free_port()
    proc = server_process("--redis", REDIS_URL, "--redis-prefix", f"t{uuid.uuid4().hex[:8]}:",
                          "--workers", "2", port=port)
    await _workers(proc, port, 2)
    assert proc.proc is not None
    # the workers and what they started (media workers): every descendant must go
    family = [p.pid for p in psutil.Process(proc.proc.pid).children(recursive=True)]
    proc.kill9()  # SIGKILL: the supervisor cannot forward anything
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in family):
        await asyncio.sleep(0.1)
    try:
        assert not [p for p in family if _alive(p)], "orphaned workers"
        # and nobody serves the port any more (a dead worker's other threads may hold its
        # listening socket a moment longer than its main thread lives)
        while time.monotonic() < deadline + 5 and _accepts(port):
            await asyncio.sleep(0.1)
        assert not _accepts(port)
    finally:
        for p in family:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
