"""SIGTERM drains: clients are told to reconnect (1012), the process exits 0 within 5 s."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from client_sdk.protocol import SUBPROTOCOL_JSON, decode, encode
from tests.conftest import token


async def test_sigterm_closes_clients_with_1012_and_exits_zero(server_process) -> None:  # type: ignore[no-untyped-def]
    proc = server_process()
    status = await asyncio.to_thread(lambda: urllib.request.urlopen(proc.http + "/healthz", timeout=5).status)
    assert status == 200
    ws = await websockets.connect(proc.url, subprotocols=[SUBPROTOCOL_JSON])  # type: ignore[list-item]
    await ws.send(encode({"op": "auth", "rid": 1, "token": token("d")}, SUBPROTOCOL_JSON), text=True)
    assert decode(await ws.recv(), SUBPROTOCOL_JSON)["op"] == "ok"
    started = time.monotonic()
    proc.proc.send_signal(15)
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    assert ws.close_code == 1012
    assert proc.proc.wait(10) == 0
    assert time.monotonic() - started < 5
