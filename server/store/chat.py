"""Room chat and like totals on disk: what a viewer saw is there after a restart.

Why stored: room chat used to live in memory and in the bus history only, so a restart emptied
every page's chat and the like count went back to 0. A message is written before it is
published (server/chatlog.py batches the messages of one loop iteration into one transaction,
which SQLite's writer thread then commits together with the orders of that moment); a like is
not worth a write of its own, so the totals are added as coalesced deltas by the periodic
flush (server/rooms.py). The same statements run on PostgreSQL in a cluster.

A message may carry the sender's client id (`cid`): (channel, user, cid) is unique, so a
resend after a lost reply finds the first message instead of posting a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from server.store.db import Body, Db, Many, Q, X, steps

Message = dict[str, Any]


_CHUNK = 500  # rows per INSERT (6 values each: far below either database's limit)


class ChatStore(Protocol):
    async def add_messages(self, batch: Sequence[tuple[str, Message]]) -> list[Message | None]:
        """Write each (channel, message); per message, None if it is new or the first
        message of the same (channel, user, cid) if it was a resend (nothing written)."""

    async def recent(self, ch: str, n: int) -> list[Message]:
        """The channel's last `n` messages, oldest first."""

    async def delete(self, ch: str, message_id: str | None = None, user: str | None = None) -> None:
        """Forget one message (moderation), or every message of a banned user."""

    async def prune(self, before_ms: int, limit: int) -> int:
        """Delete at most `limit` messages written before `before_ms`, oldest first; how many."""

    async def add_likes(self, deltas: Sequence[tuple[str, int]]) -> None: ...
    async def likes(self, ch: str) -> int: ...


class SqlChatStore:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def add_messages(self, batch: Sequence[tuple[str, Message]]) -> list[Message | None]:
        rows = [(ch, m["id"], m["user"], m.get("cid"), orjson.dumps(m).decode(), m["at"])
                for ch, m in batch]

        def body() -> Body[list[Message | None]]:
            # one statement per chunk, not one per message: a statement is a GIL hand-off
            # with the loop (SQLite) or a round trip (PostgreSQL); RETURNING names the rows
            # written, and only a resend (a (ch, user, cid) already there) is looked up
            written: set[tuple[str, str]] = set()
            for at in range(0, len(rows), _CHUNK):
                part = rows[at:at + _CHUNK]
                values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(part))
                got = yield Q(f"INSERT INTO room_chat (ch, id, user_id, cid, body, at) VALUES {values}"
                              " ON CONFLICT DO NOTHING RETURNING ch, id", *[v for r in part for v in r])
                written.update((r["ch"], r["id"]) for r in got)
            out: list[Message | None] = []
            for ch, mid, user, cid, _, _ in rows:
                if (ch, mid) in written:
                    out.append(None)
                    continue
                first = (yield Q("SELECT body FROM room_chat WHERE ch = ? AND user_id = ?"
                                 " AND cid = ?", ch, user, cid)) if cid is not None else []
                if not first:
                    raise RuntimeError(f"chat message id {mid} already used in {ch}")
                out.append(orjson.loads(first[0]["body"]))
            return out

        return await self.db.write(body)

    async def recent(self, ch: str, n: int) -> list[Message]:
        rows = await self.db.rows("SELECT body FROM room_chat WHERE ch = ?"
                                  " ORDER BY at DESC, seq DESC LIMIT ?", ch, n)
        return [orjson.loads(r["body"]) for r in reversed(rows)]

    async def delete(self, ch: str, message_id: str | None = None, user: str | None = None) -> None:
        if message_id is not None:
            await self.db.write(steps(X("DELETE FROM room_chat WHERE ch = ? AND id = ?", ch, message_id)))
        elif user is not None:
            await self.db.write(steps(X("DELETE FROM room_chat WHERE ch = ? AND user_id = ?", ch, user)))

    async def prune(self, before_ms: int, limit: int) -> int:
        # by `seq`, the primary key, which grows with `at`: the oldest rows are found first
        # without an index on `at` alone
        gone = await self.db.write(steps(Q(
            "DELETE FROM room_chat WHERE seq IN (SELECT seq FROM room_chat WHERE at < ?"
            " ORDER BY seq LIMIT ?) RETURNING seq", before_ms, limit)))
        return len(gone)

    async def add_likes(self, deltas: Sequence[tuple[str, int]]) -> None:
        if deltas:
            await self.db.write(steps(Many(
                "INSERT INTO room_likes (ch, total) VALUES (?, ?)"
                " ON CONFLICT (ch) DO UPDATE SET total = room_likes.total + excluded.total",
                list(deltas))))

    async def likes(self, ch: str) -> int:
        rows = await self.db.rows("SELECT total FROM room_likes WHERE ch = ?", ch)
        return int(rows[0]["total"]) if rows else 0

