"""Where a join's server CPU goes: accept, handshake, frames, token, channel, snapshot, reply,
close, and what is left (uvloop and the kernel's socket work around our code).

Run: `.venv/bin/python bench/profile_joins.py --viewers 3000` (a few seconds of joins).
The server runs in this process, pinned to `--server-cpu`, with a CPU-time stopwatch
(`time.thread_time_ns`, the loop thread's own time) around each phase; the viewers (the same
bare clients as bench/bench_fanout.py) run in another process on `--client-cpu`. The total
per join is this thread's CPU from the first connection to the last one's release, divided
by the viewers. Each stopwatch costs ~0.2 µs, counted in its phase.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_fanout import SECRET, viewers_process  # noqa: E402

SPENT: dict[str, int] = defaultdict(int)
COUNT: dict[str, int] = defaultdict(int)
_depth: list[str] = []


def timed(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Charge fn's CPU to `phase`, minus what nested timed calls charge to theirs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        t = time.thread_time_ns()
        _depth.append(phase)
        try:
            return fn(*args, **kw)
        finally:
            _depth.pop()
            spent = time.thread_time_ns() - t
            SPENT[phase] += spent
            COUNT[phase] += 1
            if _depth:
                SPENT[_depth[-1]] -= spent
    return wrapper


def timed_async(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """For a coroutine function: only the synchronous steps between its awaits are charged
    (time spent in other tasks while it waits is not)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kw: Any) -> Any:
        coro = fn(*args, **kw)
        value: Any = None
        exc: BaseException | None = None
        while True:
            t = time.thread_time_ns()
            _depth.append(phase)
            try:
                if exc is not None:
                    fut = coro.throw(exc)
                else:
                    fut = coro.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                _depth.pop()
                spent = time.thread_time_ns() - t
                SPENT[phase] += spent
                if _depth:
                    SPENT[_depth[-1]] -= spent
            exc = None
            try:
                value = await _Yield(fut)
            except BaseException as e:  # handed back to the coroutine
                exc = e
    return wrapper


class _Yield:
    def __init__(self, fut: Any) -> None:
        self.fut = fut

    def __await__(self) -> Any:
        return (yield self.fut)


def instrument() -> None:
    from server import auth, gateway, handshake, http, listener, session
    from server.ops import channels, registry

    L = listener.HttpConnection
    L.connection_made = timed("accept", L.connection_made)  # type: ignore[method-assign]
    L.data_received = timed("handshake", L.data_received)  # type: ignore[method-assign]
    http.parse_head = timed("handshake", http.parse_head)
    listener.parse_head = http.parse_head  # type: ignore[attr-defined]
    handshake.accept = timed("handshake", handshake.accept)
    S = session.Session
    S.data_received = timed("frames", S.data_received)  # type: ignore[method-assign]
    S.connection_lost = timed("close", S.connection_lost)  # type: ignore[method-assign]
    S.send_bytes = timed("reply", S.send_bytes)  # type: ignore[method-assign]
    session.frame_bytes = timed("reply", session.frame_bytes)  # type: ignore[attr-defined]
    G = gateway.Gateway
    G.dispatch = timed_async("dispatch", G.dispatch)  # type: ignore[method-assign]
    G.closed = timed("close", G.closed)  # type: ignore[method-assign]
    G.opened = timed("handshake", G.opened)  # type: ignore[method-assign]
    auth.verify_token = timed("token", auth.verify_token)
    auth.VerifiedTokens.verify = timed("token", auth.VerifiedTokens.verify)  # type: ignore[method-assign]
    channels.authorize_channel = timed_async("channel", channels.authorize_channel)
    channels._enter = timed("channel", channels._enter)
    for name, phase in (("auth", "auth (other)"), ("join", "join (other)")):
        spec = registry.OPS[name]
        registry.OPS[name] = dataclasses.replace(spec, handler=timed_async(phase, spec.handler))
    from server.channels import Channels

    Channels.snapshot_at = timed("snapshot", Channels.snapshot_at)  # type: ignore[method-assign]


async def run(args: argparse.Namespace) -> None:
    from server.app import App
    from server.config import Config

    instrument()
    cfg = Config(host="127.0.0.1", port=0, data_dir=Path(tempfile.mkdtemp()), secret=SECRET)
    app = App(cfg)
    await app.start()
    # as `souk serve` does (server/cli.py): long-lived objects frozen, young ones collected rarely
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    SPENT.clear()
    t0 = time.thread_time_ns()
    p0 = time.process_time_ns()
    crowd = ctx.Process(target=viewers_process,
                        args=(theirs, cfg.port, args.viewers, args.client_cpu, args.concurrency))
    crowd.start()
    while not mine.poll():
        await asyncio.sleep(0.01)
    _, joined = mine.recv()
    await asyncio.sleep(1.0)
    mine.send(("stop", ""))
    while app.sessions:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # the releases finish
    total = time.thread_time_ns() - t0
    process = time.process_time_ns() - p0
    crowd.join(30)
    await app.stop()
    ours = sum(SPENT.values())
    print(f"{joined} joins; loop thread {total / joined / 1000:.0f} us per join "
          f"(all threads {process / joined / 1000:.0f} us)\n")
    print(f"{'phase':<16}{'us/join':>9}{'share':>8}")
    rows = sorted(SPENT.items(), key=lambda kv: -kv[1])
    rows.append(("uvloop + kernel (rest)", total - ours))
    for phase, ns in rows:
        print(f"{phase:<16}{ns / joined / 1000:9.1f}{100 * ns / total:7.1f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewers", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=50, help="joins in flight at once")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    a = p.parse_args()
    os.sched_setaffinity(0, {a.server_cpu})
    uvloop.run(run(a))


if __name__ == "__main__":
    main()
