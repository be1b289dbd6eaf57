"""POST /api/products/<id>/image over real HTTP: the type comes from the bytes, never from
the Content-Type; only PNG, JPEG and WebP; 2 MB at most (413 before the body is read); only
the shop's streamers and admins; stored by content hash, served with its type, a long cache
and the CSP; viewers of a room that pins the product are told. The picture is recorded in the
database: a node whose file cache lost it, or another node of a cluster, still serves it."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from client_sdk import Client
from tests.conftest import Running, ServerProcess, png, token

WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
SVG = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"


def call(srv: Running | ServerProcess, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    port = int(srv.http.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def announce_only(srv: Running, path: str, length: int, tok: str) -> bytes:
    """Send a request head that announces `length` bytes of body, and nothing more."""
    port = int(srv.http.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                     f"Content-Type: image/png\r\nContent-Length: {length}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def upload(srv: Running | ServerProcess, product: str, data: bytes, tok: str, ctype: str = "image/png") -> tuple[int, Any]:
    status, _, body = call(srv, "POST", f"/api/products/{product}/image", data,
                           {"Authorization": f"Bearer {tok}", "Content-Type": ctype})
    return status, orjson.loads(body) if body else None


async def test_upload_sniffs_bounds_authorizes_stores_and_serves(server: Running) -> None:
    boss = token("boss", "streamer", rooms=["pics"], shop="teashop")
    async with server.client("boss", "streamer", rooms=["pics"], shop="teashop") as st, \
            server.client("fan", rooms=["pics"]) as fan:
        product = (await st.request("product_create", title="Green tea", price=1000, stock=5))["product"]
        await st.request("pin", room="pics", product=product["id"])
        await fan.join("pics")
        pins = fan.events("room:pics", types=["pinned"])
        picture = png()
        # sent as image/gif and still a PNG: the bytes decide
        status, doc = await asyncio.to_thread(upload, server, product["id"], picture, boss, "image/gif")
        assert status == 200, doc
        name = hashlib.sha256(picture).hexdigest() + ".png"
        assert doc["image"] == f"/images/{name}" and doc["product"]["image"] == doc["image"]
        pinned = await pins.next(5)  # the room that pins it is told
        assert pinned["product"]["image"] == doc["image"]
        status, headers, body = await asyncio.to_thread(call, server, "GET", doc["image"])
        assert (status, body, headers["content-type"]) == (200, picture, "image/png")
        assert "immutable" in headers["cache-control"] and headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in headers["content-security-policy"]
        # WebP is taken too
        status, doc = await asyncio.to_thread(upload, server, product["id"], WEBP, boss, "image/webp")
        assert status == 200 and doc["image"].endswith(".webp")
        status, headers, _ = await asyncio.to_thread(call, server, "GET", doc["image"])
        assert headers["content-type"] == "image/webp"
        # refused: SVG (even labelled PNG), an empty body, too large, another shop, a viewer
        for data, ctype in ((SVG, "image/png"), (b"GIF89a" + b"\0" * 20, "image/gif")):
            status, doc = await asyncio.to_thread(upload, server, product["id"], data, boss, ctype)
            assert status == 415 and "PNG, JPEG or WebP" in doc["message"]
        status, doc = await asyncio.to_thread(upload, server, product["id"], b"", boss)
        assert status == 400 and doc["error"] == "invalid"
        # too large: refused from the head alone, before a byte of the body is sent
        reply = await asyncio.to_thread(announce_only, server, f"/api/products/{product['id']}/image",
                                        2 * 1024 * 1024 + 1, boss)
        assert reply.startswith(b"HTTP/1.1 413") and b'"too_large"' in reply
        other = token("rival", "streamer", rooms=["pics"], shop="othershop")
        status, doc = await asyncio.to_thread(upload, server, product["id"], picture, other)
        assert status == 403
        status, doc = await asyncio.to_thread(upload, server, product["id"], picture, token("fan", rooms=["pics"]))
        assert status == 403
        status, doc = await asyncio.to_thread(upload, server, "nosuch", picture, boss)
        assert status == 404
        status, _, _ = await asyncio.to_thread(call, server, "POST", f"/api/products/{product['id']}/image", picture)
        assert status == 401
        # names that are not stored pictures are not files
        for bad in ("/images/../souk.sqlite3", "/images/" + "0" * 64 + ".png", "/images/x.svg"):
            status, _, _ = await asyncio.to_thread(call, server, "GET", bad)
            assert status == 404, bad
        # the product keeps the last good picture after the refusals
    async with server.client("late", rooms=["pics"]) as late:
        snap = await late.join("pics")
        assert snap["pinned"]["image"].endswith(".webp")


async def _product(url: str, sub: str, shop: str) -> str:
    async with Client(url, token(sub, "streamer", shop=shop), reconnect=False) as st:
        return str((await st.request("product_create", title="Oolong", price=900, stock=3))["product"]["id"])


async def test_a_picture_outlives_the_nodes_file_cache(
        server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """The file under the data directory is a cache: deleted, the picture is read back from
    the database (SQLite here), served, and cached again."""
    data = tmp_path / "pics"
    node = server_process(data_dir=data)
    product = await _product(node.url, "boss", "teashop")
    picture = png(16, 16)
    status, doc = await asyncio.to_thread(upload, node, product, picture, token("boss", "streamer", shop="teashop"))
    assert status == 200, doc
    cached = data / "images" / doc["image"].rsplit("/", 1)[1]
    assert cached.read_bytes() == picture
    cached.unlink()
    status, headers, body = await asyncio.to_thread(call, node, "GET", doc["image"])
    assert (status, body, headers["content-type"]) == (200, picture, "image/png")
    assert cached.read_bytes() == picture  # cached again
    node.terminate()
    node = server_process(data_dir=data, port=node.port)  # and after a restart
    cached.unlink()
    status, _, body = await asyncio.to_thread(call, node, "GET", doc["image"])
    assert (status, body) == (200, picture)


@pytest.mark.scaleout
@pytest.mark.timeout(90)
async def test_a_picture_uploaded_through_one_node_shows_on_the_other(
        server_process: Callable[..., ServerProcess], prefix: str, database: str, tmp_path: Path) -> None:
    flags = ("--redis", "redis://127.0.0.1:6379/0", "--redis-prefix", prefix, "--postgres", database)
    a, b = (server_process(*flags, data_dir=tmp_path / f"n{i}") for i in range(2))
    product = await _product(a.url, "boss", "teashop")
    picture = png(24, 12)
    status, doc = await asyncio.to_thread(upload, a, product, picture, token("boss", "streamer", shop="teashop"))
    assert status == 200, doc
    assert not (tmp_path / "n1" / "images").exists()  # B never saw the upload
    status, headers, body = await asyncio.to_thread(call, b, "GET", doc["image"])
    assert (status, body, headers["content-type"]) == (200, picture, "image/png")
    assert "immutable" in headers["cache-control"]
    status, _, _ = await asyncio.to_thread(call, b, "GET", "/images/" + "1" * 64 + ".png")
    assert status == 404
