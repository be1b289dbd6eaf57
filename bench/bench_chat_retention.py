"""What the chat retention sweep costs: how long each of its transactions holds the writer.

The sweep (`--chat-retention-days`, server/chatlog.py) deletes old room chat 2,000 rows per
transaction so that orders queued behind it wait at most one chunk. This fills a fresh store
(SQLite in a temporary directory, or PostgreSQL with `--postgres DSN`, in a schema of its own)
with `--messages` messages over 50 rooms, then sweeps all but the newest 1,000 and prints the
time of each chunk's transaction (p50 / p95 / max) and the total. Pin it to be quiet:

    taskset -c 1 .venv/bin/python bench/bench_chat_retention.py --messages 300000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.chatlog import _PRUNE_CHUNK
from server.store.chat import SqlChatStore
from server.store.stores import open_db


async def run(messages: int, postgres: str) -> dict[str, object]:
    target: str | Path
    if postgres:
        import asyncpg  # a schema of its own, made fresh

        conn = await asyncpg.connect(postgres)
        await conn.execute("DROP SCHEMA IF EXISTS bench_retention CASCADE; CREATE SCHEMA bench_retention")
        await conn.close()
        target = f"{postgres}?search_path=bench_retention"
    else:
        target = Path(tempfile.mkdtemp(prefix="souk-retention-")) / "souk.sqlite3"
    db = await open_db(target)
    store = SqlChatStore(db)
    try:
        for start in range(0, messages, 5_000):
            await store.add_messages([
                (f"room:r{i % 50}", {"id": f"m{i}", "user": f"u{i % 997}", "name": "A",
                                     "role": "viewer", "text": "x" * 40, "at": i})
                for i in range(start, min(start + 5_000, messages))])
        chunks: list[float] = []
        while True:
            t0 = time.perf_counter()
            gone = await store.prune(messages - 1_000, _PRUNE_CHUNK)
            chunks.append((time.perf_counter() - t0) * 1000)
            if gone < _PRUNE_CHUNK:
                break
    finally:
        await db.close()
        if postgres:
            conn = await asyncpg.connect(postgres)
            await conn.execute("DROP SCHEMA bench_retention CASCADE")
            await conn.close()
    chunks.sort()
    return {"database": "postgres" if postgres else "sqlite", "messages": messages,
            "chunk_rows": _PRUNE_CHUNK, "chunks": len(chunks),
            "chunk_ms": {"p50": round(statistics.median(chunks), 1),
                         "p95": round(chunks[int(len(chunks) * 0.95)], 1), "max": round(chunks[-1], 1)},
            "total_ms": round(sum(chunks)), "load_average": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--postgres", default="", help="a postgresql:// DSN (default: SQLite)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.messages, args.postgres))))


if __name__ == "__main__":
    main()
