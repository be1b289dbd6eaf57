"""A bounded property test: thousands of random frames per encoding, with the op and strike
limits raised (otherwise it would only test the rate limiter), from authenticated clients of
every role and of two shops, over ops drawn from the registry and fields that often look
right. Asserted: every frame is answered and never with `internal`, the server logs no
traceback, and a watcher following the room the fuzz speaks in sees its seq without a gap."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import msgpack
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, decode, encode
from server.ops.registry import OPS
from tests.conftest import Running, token

MP, JS = SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON
EXAMPLES = 120  # per encoding
FRAMES = 25  # per example: 6,000 frames in all
FRAMES_TRIED = {"n": 0}
CODES: dict[str, int] = {}

ids = st.sampled_from(["fz", "r1", "g1", "u1", "fuzz-a", "fuzz-b", "fuzz-1", "*", "", "x" * 200,
                       "../etc", "room:fz", "group:g1", "user:fuzz-a", "staff:fz"])
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=True) | st.text(max_size=40) | ids)
values = st.recursive(scalars | st.binary(max_size=20),
                      lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                           max_size=4),
                      max_leaves=12)
KEYS = ["room", "group", "user", "ch", "seq", "epoch", "text", "sale", "offer", "team", "poll",
        "product", "qty", "key", "state", "title", "seconds", "message", "question", "count",
        "tier", "topic", "invite", "option", "draw", "url", "kind", "value", "groups", "price",
        "stock", "duration_s", "per_user_limit", "options", "layer", "points", "sdp", "users"]
op_names = st.sampled_from([*sorted(OPS), "", "x" * 40, "batch", "event"])
frames = st.builds(
    lambda op, fields, rid: {**fields, "op": op, "rid": rid},
    op_names,
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), values, max_size=6),
    st.one_of(st.integers(1, 10**6), st.integers(1, 10**6), st.integers(1, 10**6),
              st.sampled_from([-1, 2**60, "7", None, True])),
)
# frames that mostly look right, so the fuzz gets past validation into the handlers
sensible: dict[str, st.SearchStrategy[Any]] = {
    "room": st.sampled_from(["fz", "fz", "r1", "other"]),
    "group": st.sampled_from(["g1", "nope"]),
    "user": st.sampled_from(["fuzz-0", "fuzz-1", "fuzz-3", "fuzz-4", "nobody"]),
    "text": st.text(min_size=1, max_size=30) | st.just("buy at http://spam.example"),
    "seconds": st.integers(-5, 10**6), "count": st.integers(-3, 200),
    "seq": st.integers(-1, 50), "ch": st.sampled_from(["room:fz", "group:g1", "staff:fz", "user:fuzz-0"]),
    "state": st.sampled_from(["live", "paused", "idle", "ended", 3]),
    "qty": st.integers(-1, 5), "key": st.text(max_size=8), "title": st.text(max_size=20),
    "message": st.sampled_from(["m1", "m2", "x"]),
}
plausible = st.builds(
    lambda op, fields, rid: {**fields, "op": op, "rid": rid},
    st.sampled_from(sorted(o for o in OPS if o != "auth")),
    st.fixed_dictionaries({}, optional=sensible),
    st.integers(1, 10**6),
)
chats = st.builds(lambda text, rid: {"op": "chat", "room": "fz", "text": text, "rid": rid},
                  sensible["text"], st.integers(1, 10**6))
frames = st.one_of(plausible, plausible, chats, frames)
raw = st.binary(max_size=120)
payloads = st.lists(st.tuples(st.integers(0, 9), frames, raw), min_size=FRAMES, max_size=FRAMES)


def _wire(frame: dict[str, Any], sp: str) -> bytes | str:
    """A well-formed frame: binary for msgpack, text for JSON (the server insists)."""
    data = encode(frame, sp)
    return data.decode() if sp == JS and isinstance(data, bytes) else data


def _encode(kind: int, frame: dict[str, Any], junk: bytes, sp: str) -> bytes | str:
    if kind == 0:  # undecodable or not a map
        return junk if sp == MP else junk.decode("latin-1")
    if sp == MP:
        return bytes(msgpack.packb(frame, use_bin_type=True))
    try:
        return orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # a value JSON has no words for (bytes inside a map key...)
        return orjson.dumps({"op": frame["op"], "rid": 1}).decode()


class Fuzzer:
    """Connections of each role, reopened when the server closes one (a strike limit still
    exists, only raised)."""

    def __init__(self, srv: Running, sp: str) -> None:
        self.srv, self.sp = srv, sp
        self.conns: list[websockets.ClientConnection | None] = [None] * 6
        self.n = 0

    async def conn(self, i: int) -> websockets.ClientConnection:
        ws = self.conns[i]
        if ws is None or ws.close_code is not None:
            role = ["viewer", "member", "moderator", "streamer", "admin", "viewer"][i]
            shop = "default" if i % 2 else "other"
            ws = await websockets.connect(self.srv.url, subprotocols=[self.sp],  # type: ignore[list-item]
                                          max_size=2**24)
            await ws.send(_wire({"op": "auth", "rid": 0,
                                 "token": token(f"fuzz-{i}", role, shop=shop, groups=["*"])},
                                self.sp))
            assert decode(await asyncio.wait_for(ws.recv(), 5), self.sp)["op"] == "ok"
            await ws.send(_wire({"op": "join", "rid": 0, "room": "fz"}, self.sp))
            self.conns[i] = ws
        return ws

    async def send_batch(self, batch: list[tuple[int, dict[str, Any], bytes]]) -> list[dict[str, Any]]:
        """Pipeline the frames, then a ping; read until its reply. Returns the errors."""
        self.n += 1
        ws = await self.conn(self.n % len(self.conns))
        errors: list[dict[str, Any]] = []
        try:
            for kind, frame, junk in batch:
                await ws.send(_encode(kind, frame, junk, self.sp))
                FRAMES_TRIED["n"] += 1
            marker = 2**52 + self.n
            await ws.send(_wire({"op": "ping", "rid": marker}, self.sp))
            deadline = time.monotonic() + 10
            while True:
                msg = decode(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())),
                             self.sp)
                if msg.get("op") == "error":
                    errors.append(msg)
                if msg.get("op") == "ok" and msg.get("rid") == marker:
                    return errors
        except websockets.ConnectionClosed as closed:
            # closed for a reason the protocol names (policy, too big), never an error
            assert closed.rcvd is not None and closed.rcvd.code in (1008, 1009, 1007), closed
            return errors

    async def close(self) -> None:
        for ws in self.conns:
            if ws is not None:
                await ws.close()


async def _watch(srv: Running, seen: list[int], stop: asyncio.Event) -> None:
    async with websockets.connect(srv.url, subprotocols=[JS]) as ws:  # type: ignore[list-item]
        await ws.send(_wire({"op": "auth", "rid": 0, "token": token("watcher")}, JS))
        await ws.send(_wire({"op": "join", "rid": 1, "room": "fz"}, JS))
        while not stop.is_set():
            try:
                msg = decode(await asyncio.wait_for(ws.recv(), 0.2), JS)
            except TimeoutError:
                continue
            if msg.get("op") == "ok" and msg.get("rid") == 1:
                seen.append(int(msg["snapshot"].get("seq", 0)))
            items = msg["items"] if msg.get("op") == "batch" else [msg]
            for ev in items:
                if ev.get("op") == "event" and ev.get("ch") == "room:fz" and "seq" in ev:
                    seen.append(int(ev["seq"]))


@pytest.mark.parametrize("sp", [MP, JS])
async def test_random_frames_never_crash_and_a_watcher_sees_every_seq(
        server_factory: Any, caplog: pytest.LogCaptureFixture, sp: str) -> None:
    caplog.set_level(logging.WARNING)
    CODES.clear()
    srv: Running = await server_factory(ops_per_s=1e6, ops_burst=1e6, chat_per_s=1e6,
                                        chat_burst=1e6, strike_limit=10**6)
    async with srv.client("host", "streamer") as host:
        await host.request("room_create", room="fz", title="fuzzed")
        await host.request("group_create", tier="normal", topic="t")
    seen: list[int] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(srv, seen, stop))
    fuzz = Fuzzer(srv, sp)
    loop = asyncio.get_running_loop()
    bad: list[dict[str, Any]] = []
    started, tried_before = time.monotonic(), FRAMES_TRIED["n"]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(batch=payloads)
    def run(batch: list[tuple[int, dict[str, Any], bytes]]) -> None:
        errors = asyncio.run_coroutine_threadsafe(fuzz.send_batch(batch), loop).result(30)
        bad.extend(e for e in errors if e.get("code") == "internal")
        for e in errors:
            CODES[str(e.get("code"))] = CODES.get(str(e.get("code")), 0) + 1

    try:
        await asyncio.to_thread(run)
        # the fuzz chatted in the room too: the watcher must have seen it, every seq once
        async with srv.client("fuzz-last", "streamer") as last:  # staff speak in an ended room too
            await last.join("fz")
            await last.chat("fz", "the last word")
        end = (await srv.app.bus.head("room:fz"))[1]
        deadline = time.monotonic() + 10
        while (not seen or seen[-1] < end) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await watcher
        await fuzz.close()
    assert not bad, bad[:3]
    assert seen and seen == list(range(seen[0], seen[0] + len(seen))), "the watcher saw a gap"
    assert seen[-1] == end
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, tracebacks[0].getMessage()
    tried = FRAMES_TRIED["n"] - tried_before
    assert tried >= EXAMPLES * FRAMES
    print(f"\nfuzz {sp}: {tried} frames in {time.monotonic() - started:.1f} s,"
          f" watcher saw seq {seen[0]}..{seen[-1]}; errors by code {sorted(CODES.items())}")
    assert threading.active_count() < 50
