"""`souk serve --workers N`: N server processes on one port, supervised.

Why processes: one Python process uses one core, and a 2-core machine has 2. The kernel spreads
new connections over the workers' listening sockets (SO_REUSEPORT, set by App.start when
workers > 1); the workers share nothing in memory, so they coordinate through Redis exactly as
nodes on different machines do (hence --redis is required).

The supervisor restarts a worker that dies (at most `MAX_RESTARTS` within `RESTART_WINDOW_S`,
then it gives up and stops the others: a crash loop is a bug to fix, not to hide) and forwards
SIGTERM/SIGINT so that every worker drains (clients get 1012 and reconnect elsewhere).

Workers die with their supervisor: a supervisor killed outright (`kill -9`, the OOM killer)
cannot forward anything, and orphaned workers would go on serving the shared port forever,
next to the new workers of a restarted supervisor. Each worker asks the kernel to kill it when
its parent dies (`prctl(PR_SET_PDEATHSIG)`, media/worker.py `die_with_parent`, as the media
workers do); its clients see the connection drop and reconnect elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import uvloop

from server.config import Config

log = logging.getLogger("souk.workers")

ENV_CONFIG = "SOUK_WORKER_CONFIG"
ENV_SUPERVISOR = "SOUK_SUPERVISOR_PID"
MAX_RESTARTS = 5
RESTART_WINDOW_S = 30.0


def config_to_env(cfg: Config) -> str:
    data = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    data["data_dir"] = str(cfg.data_dir)
    return json.dumps(data)


def config_from_env(text: str) -> Config:
    data: dict[str, Any] = json.loads(text)
    data["data_dir"] = Path(data["data_dir"])
    return Config(**data)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # worker index -> process
        self.stopping = False
        self.restarts: list[float] = []

    def spawn(self, index: int) -> None:
        env = {**os.environ, ENV_CONFIG: config_to_env(self.cfg), "SOUK_WORKER_INDEX": str(index),
               ENV_SUPERVISOR: str(os.getpid())}
        self.procs[index] = subprocess.Popen([sys.executable, "-m", "server.workers"], env=env)
        log.info("worker started", extra={"worker": index, "pid": self.procs[index].pid})

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        for i in range(self.cfg.workers):
            self.spawn(i)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        while not self.stopping:
            time.sleep(0.1)
            for i, p in list(self.procs.items()):
                code = p.poll()
                if code is None or self.stopping:
                    continue
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
                if len(self.restarts) >= MAX_RESTARTS:
                    log.error("workers keep crashing: giving up", extra={"worker": i, "code": code})
                    self.stopping = True
                    self._stop_all()
                    return 1
                self.restarts.append(now)
                log.warning("worker died: restarting", extra={"worker": i, "code": code})
                self.spawn(i)
        return self._stop_all()

    def _stop_all(self) -> int:
        """Forward SIGTERM (each worker drains), wait, then kill what is left."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.drain_timeout_s + 5
        ok = True
        for p in self.procs.values():
            try:
                code = p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                code = p.wait()
            ok = ok and code in (0, -signal.SIGTERM)
        return 0 if ok else 1


def run_workers(cfg: Config) -> int:
    """Entry point from `souk serve --workers N` (server/cli.py)."""
    if not cfg.redis:
        print("souk: --workers needs --redis (workers coordinate through Redis)", file=sys.stderr)
        return 2
    if cfg.port == 0:
        cfg.port = _free_port(cfg.host)  # every worker must bind the same port
    return Supervisor(cfg).run()


async def _worker(cfg: Config) -> None:
    import asyncio

    from server.app import App

    app = App(cfg)
    await app.start()
    log.info("worker listening", extra={"port": cfg.port, "pid": os.getpid()})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.drain()


def worker_main() -> None:
    from media.worker import die_with_parent
    from server.logs import setup_logging

    die_with_parent(int(os.environ[ENV_SUPERVISOR]))  # a killed supervisor takes its workers
    cfg = config_from_env(os.environ[ENV_CONFIG])
    setup_logging(cfg.log_level)
    uvloop.run(_worker(cfg))


if __name__ == "__main__":
    worker_main()
