"""Exit code 3 for every bad configuration, before any load is sent."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.cli import main
from loadtest.workers import open_file_limit

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


@pytest.mark.parametrize(
    "argv",
    [
        ["nosuch", "--url", "ws://127.0.0.1:9/ws"],  # unknown scenario
        ["join", "--url", "http://127.0.0.1:9/ws"],  # not a websocket URL
        ["join", "--url", "ws:///ws"],  # no host
        ["join", "--url", "ws://127.0.0.1:99999/ws"],  # bad port
        ["join", "--url", "ws://127.0.0.1:9/ws", "--slo", "jion.p99<600ms"],  # unknown metric
        ["join", "--url", "ws://127.0.0.1:9/ws", "--slo", "event.p99<600ms"],  # not in this scenario
        ["join", "--url", "ws://127.0.0.1:9/ws", "--slo", "join.p99<600"],  # no unit
        ["join", "--url", "ws://127.0.0.1:9/ws", "--set", "buyers"],  # knob without value
        ["join", "--url", "ws://127.0.0.1:9/ws", "--rate", "0"],
        ["join", "--url", "ws://127.0.0.1:9/ws", "--viewers", "nan-ish"],  # argparse error
        ["join", "--url", "ws://127.0.0.1:9/ws", "--profile", "huge"],
    ],
)
def test_bad_configuration_exits_3(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main([*argv, "--no-live"]))
    assert exc.value.code == 3


def test_unreachable_server_exits_3() -> None:
    assert main(["join", "--url", f"ws://127.0.0.1:{_closed_port()}/ws", "--secret", "x", "--no-live"]) == 3


def test_crowd_beyond_open_file_limit_exits_3() -> None:
    viewers = open_file_limit()  # one process cannot hold that many sockets plus its own files
    assert main(["join", "--url", "ws://127.0.0.1:9/ws", "--viewers", str(viewers), "--workers", "1",
                 "--no-live"]) == 3


def test_console_entry_point_runs_as_module() -> None:
    out = subprocess.run([sys.executable, "-m", "loadtest", "nosuch", "--url", "ws://127.0.0.1:9/ws"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert "unknown scenario" in out.stdout
