"""Replays over a real server: a 20 s live recorded with chapters, listed, served with Range,
deleted; a recording cut by kill -9 plays up to its last cluster."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
import pytest_asyncio

from client_sdk.errors import SoukError
from media.testing import loopback, read_stamp
from media.testing.peers import PublisherPeer
from server.app import App
from tests.conftest import Running, ServerProcess, make_config, token

pytestmark = pytest.mark.media

LIVE_S = 20.0


async def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


class Recorded:
    """What the module's one live left: the server, the pins' wall times, the listing."""

    def __init__(self, srv: Running, pins: list[tuple[str, float]], listing: list[dict[str, Any]],
                 frames_sent: int, wall_s: float) -> None:
        self.srv = srv
        self.pins = pins
        self.listing = listing
        self.frames_sent = frames_sent
        self.wall_s = wall_s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Recorded]:
    """One 20 s live of the stamped camera, recorded, with a pin at ~3 s, a sale at ~9 s and a
    pin at ~15 s; several tests read it."""
    tmp = tmp_path_factory.mktemp("replays")
    app = App(make_config(tmp, media_workers=0))
    await app.start()
    srv = Running(app, f"ws://127.0.0.1:{app.cfg.port}/ws", f"http://127.0.0.1:{app.cfg.port}")
    try:
        with loopback():
            pub = PublisherPeer(codec="VP8")
            async with srv.client("s", "streamer") as st:
                await st.request("room_create", room="show", title="Show", record=True)
                tea = (await st.request("product_create", title="Tea", price=990, stock=5,
                                        image="/static/products/tea.svg"))["product"]
                cup = (await st.request("product_create", title="Cup", price=1990,
                                        stock=5))["product"]
                await st.request("room_state", room="show", state="live")
                reply = await st.request("publish", room="show", sdp=await pub.offer())
                started = time.monotonic()
                await pub.accept(reply["sdp"])
                pins: list[tuple[str, float]] = []
                await asyncio.sleep(3)
                pins.append((tea["id"], time.time()))
                await st.request("pin", room="show", product=tea["id"])
                await asyncio.sleep(6)
                pins.append((cup["id"], time.time()))
                await st.request("sale_create", room="show", product=cup["id"], price=990,
                                 stock=3, duration_s=600)
                await asyncio.sleep(6)
                pins.append((cup["id"], time.time()))
                await st.request("pin", room="show", product=cup["id"])
                await asyncio.sleep(started + LIVE_S - time.monotonic())
                await st.request("room_state", room="show", state="ended")
                wall = time.monotonic() - started
                sent = pub.video.frames_sent
            await pub.close()
        status, _, body = await get(srv.http + "/api/rooms/show/replays",
                                    {"Authorization": "Bearer " + token("v")})
        assert status == 200, body
        yield Recorded(srv, pins, json.loads(body), sent, wall)
    finally:
        await app.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_recording_decodes_with_its_chapters_where_the_pins_were(
        recorded: Recorded) -> None:
    [replay] = recorded.listing
    assert replay["url"] == f"/api/replays/{replay['id']}/file"
    path = recorded.srv.app.replays.directory / f"{replay['id']}.webm"
    assert replay["size"] == path.stat().st_size
    assert abs(replay["duration_s"] - recorded.wall_s) < 0.5, (replay, recorded.wall_s)
    with av.open(str(path)) as c:
        assert c.streams.audio, "the Opus track is muxed too"
        frames = [(float(f.time), read_stamp(f)) for f in c.decode(video=0)]
    assert len(frames) >= 0.95 * recorded.frames_sent - 15, (len(frames), recorded.frames_sent)
    assert abs(frames[-1][0] - replay["duration_s"]) < 0.5
    chapters = replay["chapters"]
    assert [(c["kind"], c["product"]) for c in chapters] == [
        ("pin", recorded.pins[0][0]), ("sale", recorded.pins[1][0]), ("pin", recorded.pins[2][0])]
    assert chapters[0]["title"] == "Tea" and chapters[0]["image"] == "/static/products/tea.svg"
    for c, (_, wall) in zip(chapters, recorded.pins, strict=True):
        # the frame shown at the chapter's time was captured when the product was pinned
        shown = min(frames, key=lambda f: abs(f[0] - c["at_s"]))
        assert shown[1] is not None
        # the stamp is the capture's wall time in ms modulo 2^40
        off_ms = (int(wall * 1000) - shown[1] + (1 << 39)) % (1 << 40) - (1 << 39)
        assert abs(off_ms) < 500, (c, off_ms)


@pytest.mark.asyncio(loop_scope="module")
async def test_range_requests_and_refusals(recorded: Recorded) -> None:
    [replay] = recorded.listing
    path = recorded.srv.app.replays.directory / f"{replay['id']}.webm"
    data = path.read_bytes()
    auth = {"Authorization": "Bearer " + token("v")}
    url = recorded.srv.http + replay["url"]
    status, headers, body = await get(url, {**auth, "Range": "bytes=1000-4999"})
    assert status == 206 and headers["content-range"] == f"bytes 1000-4999/{len(data)}"
    assert headers["accept-ranges"] == "bytes" and body == data[1000:5000]
    status, headers, body = await get(url, {**auth, "Range": "bytes=-100"})
    assert status == 206 and body == data[-100:]
    status, headers, body = await get(url, {**auth, "Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
    status, headers, body = await get(url + f"?token={token('v')}", {})  # <video src>
    assert status == 200 and body == data and headers["content-type"] == "video/webm"
    assert (await get(url, {}))[0] == 401
    other = {"Authorization": "Bearer " + token("o", rooms=["other"])}
    assert (await get(url, other))[0] == 403
    bad = recorded.srv.http + "/api/replays/..%2f..%2fsouk/file"
    assert (await get(bad, auth))[0] == 404
    status, _, body = await get(recorded.srv.http + "/api/rooms/nothing/replays", auth)
    assert status == 200 and json.loads(body) == []


@pytest.mark.asyncio(loop_scope="module")
async def test_a_large_recording_streams_in_chunks(recorded: Recorded, tmp_path: Path) -> None:
    """256 MiB sent whole and as a range: the server's memory does not grow with the file."""
    app = recorded.srv.app
    rid = "0000000000001-big-0"
    big = app.replays.directory / f"{rid}.webm"
    _sparse(big, 256 * 1024 * 1024, 200 * 1024 * 1024, b"marker")
    await app.replays.store.begin(rid, "show", big.name, 1)
    await app.replays.store.finish(rid, 2, 1000, 256 * 1024 * 1024, "done", None)
    before = vm_hwm_kib()
    received = await asyncio.get_running_loop().run_in_executor(
        None, _download, recorded.srv.app.cfg.port, f"/api/replays/{rid}/file", None)
    assert received == (200, 256 * 1024 * 1024)
    status, body = await asyncio.get_running_loop().run_in_executor(
        None, _download_body, recorded.srv.app.cfg.port, f"/api/replays/{rid}/file",
        f"bytes={200 * 1024 * 1024}-{200 * 1024 * 1024 + 5}")
    assert status == 206 and body == b"marker"
    grown_mib = (vm_hwm_kib() - before) / 1024
    assert grown_mib < 32, f"the peak RSS grew by {grown_mib:.0f} MiB"
    async with recorded.srv.client("s", "streamer") as st:
        with pytest.raises(SoukError) as err:
            await st.request("replay_delete", room="other", replay=rid)
        assert err.value.code == "not_found"
        async with recorded.srv.client("v", "viewer") as v:
            with pytest.raises(SoukError) as err:
                await v.request("replay_delete", room="show", replay=rid)
            assert err.value.code == "forbidden"
        assert (await st.request("replay_delete", room="show", replay=rid))["deleted"] == rid
    assert not big.exists()
    assert await app.replays.replay(rid) is None


def _sparse(path: Path, size: int, at: int, data: bytes) -> None:
    """A file of ``size`` bytes, all holes but ``data`` at ``at``."""
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(at)
        f.write(data)


def _request(port: int, path: str, rng: str | None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token('v')}\r\n"
    if rng:
        head += f"Range: {rng}\r\n"
    s.sendall((head + "Connection: close\r\n\r\n").encode())
    return s


def _read_head(s: socket.socket) -> tuple[int, int, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
    return int(lines[0].split()[1]), length, rest


def _download(port: int, path: str, rng: str | None) -> tuple[int, int]:
    """Status and body length, the body read and dropped (never held)."""
    with _request(port, path, rng) as s:
        status, length, rest = _read_head(s)
        got = len(rest)
        while got < length:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        return status, got


def _download_body(port: int, path: str, rng: str | None) -> tuple[int, bytes]:
    with _request(port, path, rng) as s:
        status, length, rest = _read_head(s)
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest


async def test_kill9_leaves_a_file_that_plays_to_its_last_cluster(
        server_process: Any, tmp_path: Path) -> None:
    proc: ServerProcess = server_process("--record", "--media-workers", "0")
    with loopback():
        pub = PublisherPeer(codec="VP8")
        from client_sdk.client import Client

        async with Client(proc.url, token("s", "streamer")) as st:
            await st.request("room_create", room="cut", title="Cut")
            await st.request("room_state", room="cut", state="live")
            reply = await st.request("publish", room="cut", sdp=await pub.offer())
            await pub.accept(reply["sdp"])
            await asyncio.sleep(6)
            proc.kill9()
        await pub.close()
    [path] = list((tmp_path / "data" / "replays").glob("*.webm"))
    with av.open(str(path)) as c:
        times = [float(f.time) for f in c.decode(video=0)]
    assert len(times) > 90 and times[-1] > 3.5, (len(times), times[-1:])
    proc2 = server_process("--media-workers", "0", data_dir=tmp_path / "data")
    _, _, body = await get(proc2.http + "/api/rooms/cut/replays",
                           {"Authorization": "Bearer " + token("v")})
    [replay] = json.loads(body)
    assert replay["status"] == "cut" and replay["size"] == path.stat().st_size
    assert abs(replay["duration_s"] - times[-1]) < 0.2


async def test_a_recording_that_cannot_start_is_told_to_staff_and_the_live_goes_on(
        server_factory: Any, tmp_path: Path) -> None:
    data = tmp_path / "srv0" / "data"
    data.mkdir(parents=True)
    (data / "replays").write_text("not a directory")  # the recordings cannot be written
    srv: Running = await server_factory(media_workers=0)
    assert srv.app.cfg.data_dir == data
    with loopback():
        pub = PublisherPeer(codec="VP8")
        async with srv.client("s", "streamer") as st:
            await st.request("room_create", room="nodisk", title="x", record=True)
            await st.join("nodisk")
            failed = st.events("staff:nodisk", types=["recording_failed"])
            await st.request("room_state", room="nodisk", state="live")
            reply = await st.request("publish", room="nodisk", sdp=await pub.offer())
            event = await failed.next(5)
            assert event["room"] == "nodisk" and "could not start" in event["reason"]
            await pub.accept(reply["sdp"])
            media = srv.app.media
            assert media is not None
            deadline = time.monotonic() + 10
            while media.stats()["frames_in_total"] < 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert media.stats()["frames_in_total"] >= 30  # the live goes on
        await pub.close()
    [row] = await srv.app.replays.store.replays("nodisk")
    assert row["status"] == "failed"


async def test_retention_deletes_old_replays(server: Running) -> None:
    replays = server.app.replays
    replays.directory.mkdir(parents=True, exist_ok=True)
    day = 86_400_000
    now = replays.clock_ms()
    for rid, started in (("0000000000001-old-0", now - 8 * day), ("0000000000002-new-0", now)):
        (replays.directory / f"{rid}.webm").write_bytes(b"x")
        await replays.store.begin(rid, "kept", f"{rid}.webm", started)
        await replays.store.finish(rid, started + 1000, 1000, 1, "done", None)
    assert await replays.expire() == 0  # retention 0: kept
    replays.retention_days = 7
    assert await replays.expire() == 1
    assert [r["id"] for r in await replays.replays("kept")] == ["0000000000002-new-0"]
    assert not (replays.directory / "0000000000001-old-0.webm").exists()


async def test_in_a_cluster_the_origin_records(server_process: Any, prefix: str,
                                               tmp_path: Path) -> None:
    """The streamer publishes to node A while the studio (live, a pin, a flash sale, ended)
    talks to node B: A records, with B's pin and sale as chapters; B, which has no publisher,
    records nothing."""
    from client_sdk.client import Client

    flags = ("--redis", "redis://127.0.0.1:6379/0", "--redis-prefix", prefix, "--record",
             "--media-workers", "0")
    a = server_process(*flags, data_dir=tmp_path / "a")
    b = server_process(*flags, data_dir=tmp_path / "b")
    with loopback():
        pub = PublisherPeer(codec="VP8")
        async with Client(a.url, token("s", "streamer")) as on_a, \
                Client(b.url, token("s", "streamer")) as on_b:
            await on_a.join("two")
            await on_b.request("room_create", room="two", title="Two nodes")
            reply = await on_a.request("publish", room="two", sdp=await pub.offer())
            await pub.accept(reply["sdp"])
            await pub.connected()
            await on_b.request("room_state", room="two", state="live")
            tea = (await on_b.request("product_create", title="Tea", price=990,
                                      stock=5))["product"]
            await asyncio.sleep(2)
            await on_b.request("pin", room="two", product=tea["id"])
            await asyncio.sleep(1)
            await on_b.request("sale_create", room="two", product=tea["id"], price=500, stock=3,
                               duration_s=60, per_user_limit=1)
            await asyncio.sleep(1)
            await on_b.request("room_state", room="two", state="ended")
            auth = {"Authorization": "Bearer " + token("v")}
            deadline = time.monotonic() + 10
            listed: list[dict[str, Any]] = []
            while not listed and time.monotonic() < deadline:
                listed = json.loads((await get(a.http + "/api/rooms/two/replays", auth))[2])
                await asyncio.sleep(0.2)
        await pub.close()
    [replay] = listed
    assert replay["status"] == "done" and 3.0 < replay["duration_s"] < 5.0, replay
    assert [(c["kind"], c["product"], c["title"]) for c in replay["chapters"]] == [
        ("pin", tea["id"], "Tea"), ("sale", tea["id"], "Tea")]
    assert 1.5 < replay["chapters"][0]["at_s"] < 2.8
    assert 2.5 < replay["chapters"][1]["at_s"] < 3.8
    assert json.loads((await get(b.http + "/api/rooms/two/replays", auth))[2]) == []
    assert not list((tmp_path / "b" / "replays").glob("*.webm"))
