"""Uploaded product pictures' bytes, by name (their content hash and type).

Why in the database: a picture uploaded through one node of a cluster must show on the pages
every other node serves; the files under a node's data directory are only that node's cache
(server/images.py). A picture is at most 2 MB and a shop has few, so the shared database holds
them without a separate object store. The name is the sha256 of the bytes: writing the same
picture twice writes nothing the second time.
"""

from __future__ import annotations

from typing import Protocol

from server.store.db import Db, X, steps


class ImageStore(Protocol):
    async def put(self, name: str, body: bytes, at: int) -> None: ...
    async def get(self, name: str) -> bytes | None: ...


class SqlImageStore:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def put(self, name: str, body: bytes, at: int) -> None:
        await self.db.write(steps(X(
            "INSERT INTO images (name, body, at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            name, body, at)))

    async def get(self, name: str) -> bytes | None:
        rows = await self.db.rows("SELECT body FROM images WHERE name = ?", name)
        return bytes(rows[0]["body"]) if rows else None
