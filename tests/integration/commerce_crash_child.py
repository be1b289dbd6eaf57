"""A real process running Commerce over a real SQLite file, driven through stdin/stdout.

Used by test_commerce_crash.py, which `kill -9`s it mid-rush. Protocol (one JSON object per
line on stdin): {"op": "sale", "stock": n, "limit": n} -> prints `SALE <id>`;
{"op": "buy", "user", "sale", "qty", "key"} -> prints `ACK <user> <sale> <key> <order id>`
once the order is durable, or `ERR <user> <sale> <key> <code>`;
{"op": "offer", "size", "stock"} -> `OFFER <id>`; {"op": "team", "user", "offer", "key"} (opens
a team if matching finds none) -> `ACK <user> <offer> <key> <order id>` or `ERR ...`.
Prints `READY` after recovery.
Lines are written with os.write so that a line is either fully in the pipe or not at all.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import uvloop

from server.commerce import Commerce
from server.errors import SoukError
from server.store.ledger import SqlLedger
from server.store.stores import open_db


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def no_bus(ch: str, type: str, fields: dict[str, Any], *, droppable: bool = False) -> None:
    """The crash test checks the ledger only; events go nowhere."""


async def main(path: str) -> None:
    db = await open_db(Path(path))
    commerce = Commerce(SqlLedger(db), no_bus)
    await commerce.start()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def sale(cmd: dict[str, Any]) -> None:
        product = await commerce.product_create(
            "shop", {"title": "Tea", "price": 1000, "stock": cmd["stock"]}
        )
        created = await commerce.sale_create(
            "room",
            {
                "product": product["id"],
                "price": 100,
                "stock": cmd["stock"],
                "duration_s": 3600,
                "per_user_limit": cmd["limit"],
            },
        )
        say(f"SALE {created['id']}")

    async def buy(cmd: dict[str, Any]) -> None:
        ident = f"{cmd['user']} {cmd['sale']} {cmd['key']}"
        try:
            order = await commerce.buy(cmd["user"], cmd["sale"], cmd["qty"], cmd["key"])
        except SoukError as err:
            say(f"ERR {ident} {err.code}")
        else:
            say(f"ACK {ident} {order['id']}")

    async def offer(cmd: dict[str, Any]) -> None:
        product = await commerce.product_create(
            "shop", {"title": "Rice", "price": 1000, "stock": cmd["stock"]}
        )
        created = await commerce.teambuy_create(
            "room",
            {
                "product": product["id"],
                "price": 300,
                "size": cmd["size"],
                "window_s": 3600,
                "stock": cmd["stock"],
            },
        )
        say(f"OFFER {created['id']}")

    async def team(cmd: dict[str, Any]) -> None:
        ident = f"{cmd['user']} {cmd['offer']} {cmd['key']}"
        try:
            try:
                got = await commerce.team_join(cmd["user"], "", cmd["offer"], None, cmd["key"])
            except SoukError as err:
                if err.code != "not_found":
                    raise
                got = await commerce.team_open(cmd["user"], "", cmd["offer"], cmd["key"])
        except SoukError as err:
            say(f"ERR {ident} {err.code}")
        else:
            say(f"ACK {ident} {got['order']['id']}")

    handlers = {"sale": sale, "buy": buy, "offer": offer, "team": team}

    def dispatch(line: bytes) -> None:
        cmd = orjson.loads(line)
        coro = handlers[cmd["op"]](cmd)
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def read_stdin() -> None:
        for line in sys.stdin.buffer:
            if line.strip():
                loop.call_soon_threadsafe(dispatch, line)
        loop.call_soon_threadsafe(done.set)

    say("READY")
    threading.Thread(target=read_stdin, daemon=True).start()
    await done.wait()
    while tasks:
        await asyncio.gather(*list(tasks))
    await commerce.stop()
    await db.close()
    say("BYE")


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
