"""Spreading viewers over processes (`--workers N`) and merging what they measured.

One Python process saturates one core long before 10,000 websockets do, and may hold at most
20,000 open files (RLIMIT_NOFILE; soft = hard on this machine). Crowds therefore run in
worker processes (spawned, each with its own uvloop); the coordinator process keeps the
actors that drive the scenario (streamer, buyers, askers). Workers report progress over a
queue, stop when the coordinator sets an event, and return their metrics as plain data: the
HDR histograms merge exactly.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import queue
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

from loadtest.crowd import Crowd, CrowdSpec
from loadtest.metrics import Metrics

FD_RESERVE = 64  # stdio, the loop, psutil, log files, the coordinator's own sockets
EPHEMERAL_PORTS = 28_000  # per (source, destination) address pair on this kernel's range


class CapacityError(ValueError):
    """The requested crowd cannot fit in the processes' open-file limits."""


def open_file_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft) if soft != resource.RLIM_INFINITY else 1_000_000


def check_capacity(viewers: int, workers: int, coordinator_sockets: int) -> None:
    """Refuse a configuration whose sockets do not fit (one fd per websocket)."""
    limit = open_file_limit()
    per_worker = -(-viewers // max(workers, 1))
    if workers <= 1:
        per_worker += coordinator_sockets
    if per_worker + FD_RESERVE > limit:
        need = -(-viewers // (limit - FD_RESERVE - 1))
        raise CapacityError(
            f"{per_worker} sockets per process exceed the open-file limit {limit} "
            f"(RLIMIT_NOFILE, minus {FD_RESERVE} reserved): use --workers {max(need, 2)} or more"
        )
    if coordinator_sockets + FD_RESERVE > limit:
        raise CapacityError(f"{coordinator_sockets} actor sockets exceed the open-file limit {limit}")
    if viewers + coordinator_sockets > EPHEMERAL_PORTS:
        raise CapacityError(
            f"{viewers + coordinator_sockets} connections to one server address exceed the "
            f"~{EPHEMERAL_PORTS} ephemeral ports of one source address"
        )


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# --- in-process control -------------------------------------------------------------------
class LocalControl:
    def __init__(self, sink: Callable[[dict[str, Any]], None], start_ns: int = 0) -> None:
        self.sink = sink
        self.stop = False
        self.start = start_ns

    def start_ns(self) -> int:
        return self.start

    def progress(self, data: dict[str, Any]) -> None:
        self.sink(data)

    def stop_requested(self) -> bool:
        return self.stop


# --- worker process side ------------------------------------------------------------------
_queue: Any = None
_stop: Any = None
_start: Any = None


class _ProcessControl:
    def progress(self, data: dict[str, Any]) -> None:
        try:
            _queue.put_nowait(data)
        except queue.Full:
            pass

    def stop_requested(self) -> bool:
        return bool(_stop.is_set())

    def start_ns(self) -> int:
        return int(_start.value)


def _init_worker(q: Any, stop: Any, start: Any) -> None:
    global _queue, _stop, _start
    _queue, _stop, _start = q, stop, start


def _crowd_process(spec_data: dict[str, Any]) -> dict[str, Any]:
    import uvloop

    spec = CrowdSpec(**spec_data)

    async def main() -> dict[str, Any]:
        return await Crowd(spec, _ProcessControl(), Metrics(spec.t0_ns)).run()

    quiet_gc()
    return uvloop.run(main())


class CrowdPool:
    """Runs crowds in-process (workers <= 1) or one per worker process; same interface."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.latest: dict[str, dict[str, Any]] = {}
        self._local: list[LocalControl] = []
        self._futures: list[asyncio.Future[dict[str, Any]]] = []
        self._executor: ProcessPoolExecutor | None = None
        self._ctx = mp.get_context("spawn")
        self._queue: Any = None
        self._stop: Any = None
        self._start: Any = None
        self.expected = 0
        self.finished = False
        self.started_ns = 0

    def _sink(self, data: dict[str, Any]) -> None:
        self.latest[str(data.get("label"))] = data

    def start(self, specs: list[CrowdSpec], lead_s: float = 0.2) -> None:
        """Start the crowds; in-process ones begin their schedule `lead_s` from now."""
        loop = asyncio.get_running_loop()
        self.expected = len(specs)
        if self.workers <= 1:
            crowds = []
            for spec in specs:  # built first: a crowd signs its tokens as it is built
                spec.label = f"{spec.label}(in-process)"
                control = LocalControl(self._sink, 0)
                crowds.append((spec, control, Crowd(spec, control, Metrics(spec.t0_ns))))
            start = time.monotonic_ns() + int(lead_s * 1e9)
            for spec, control, crowd in crowds:
                spec.start_ns = control.start = start
                self._local.append(control)
                self._futures.append(asyncio.ensure_future(crowd.run()))
            return
        self._queue = self._ctx.Queue(maxsize=10_000)
        self._stop = self._ctx.Event()
        self._start = self._ctx.Value("q", 0)
        self._executor = ProcessPoolExecutor(
            max_workers=len(specs), mp_context=self._ctx,
            initializer=_init_worker, initargs=(self._queue, self._stop, self._start),
        )
        for spec in specs:
            spec.start_ns = 0
            self._futures.append(loop.run_in_executor(self._executor, _crowd_process, asdict(spec)))

    async def begin(self, lead_s: float = 0.2, timeout_s: float = 60.0) -> int:
        """Wait until every worker has booted, then start their common schedule; returns it."""
        if self._start is None:
            return int(self._local[0].start) if self._local else time.monotonic_ns()
        deadline = time.monotonic() + timeout_s
        while sum(1 for d in self.latest.values() if d.get("ready")) < self.expected:
            exc = self.failed()
            if exc is not None:
                raise exc
            if time.monotonic() > deadline:
                raise TimeoutError("worker processes did not boot in time")
            self.poll()
            await asyncio.sleep(0.01)
        start = time.monotonic_ns() + int(lead_s * 1e9)
        self._start.value = start
        return start

    def poll(self) -> None:
        """Drain worker progress messages (cheap; call it from the progress loop)."""
        if self._queue is None:
            return
        while True:
            try:
                self._sink(self._queue.get_nowait())
            except queue.Empty:
                return

    def all_joined(self) -> bool:
        self.poll()
        done = [d for d in self.latest.values() if d.get("joining_done")]
        return len(done) >= self.expected

    def failed(self) -> BaseException | None:
        for f in self._futures:
            if f.done() and f.exception() is not None:
                return f.exception()
        return None

    def totals(self) -> dict[str, int]:
        self.poll()
        out = {"planned": 0, "joined": 0, "failed": 0, "frames": 0}
        for d in self.latest.values():
            for k in out:
                out[k] += int(d.get(k, 0))
        return out

    async def wait_joined(self, timeout_s: float) -> bool:
        """Wait until every crowd has finished its join schedule (success or failure)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.all_joined():
            exc = self.failed()
            if exc is not None:
                raise exc
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def finish(self) -> list[dict[str, Any]]:
        self.finished = True
        for c in self._local:
            c.stop = True
        if self._stop is not None:
            self._stop.set()
        try:
            return list(await asyncio.gather(*self._futures))
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)


def quiet_gc() -> None:
    """Freeze what exists at start and collect young objects less often: a full collection
    over tens of thousands of connection objects would stall the generator for 100+ ms and
    be charged to the server as latency."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
