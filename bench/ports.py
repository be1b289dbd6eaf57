"""What every benchmark script needs to start a server of its own on 127.0.0.1: a free port,
and a wait until the server listens there.

Why one place: each script had its own copy of both, and the copies drifted (some noticed a
server that exited during start-up, some waited 20 s, some 30, some killed it on failure).
"""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A port nobody listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None, *,
                   timeout_s: float = 30.0, what: str = "the server") -> None:
    """Return once 127.0.0.1:`port` accepts a connection. RuntimeError if `proc` exits first
    (with the tail of its stderr when that was piped) or after `timeout_s`; `proc` is then
    killed, so a failed start leaves nothing behind."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            tail = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"{what} exited during start-up (code {proc.returncode}) {tail}".rstrip())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                if proc is not None:
                    proc.kill()
                raise RuntimeError(f"{what} did not start within {timeout_s:g} s") from None
            time.sleep(0.05)
