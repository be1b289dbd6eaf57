"""kill -9 a real process running Commerce in the middle of a rush, at random points, then
restart (recovery) and check the ledger: every acknowledged order is there, no order exists
that was not attempted, and for every sale stock_left + units sold == stock."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import orjson

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("commerce_crash_child.py")
Attempt = tuple[str, str, str]  # user, sale, key
PRODUCT_STOCK = 400  # each round: a product of 400 units, all of them put on one sale


class Child:
    """The Commerce process, with its stdout collected by a thread."""

    def __init__(self, db: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode().rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no {prefix!r} from the child; got {self.lines[-5:]}"
                self._cond.wait(left)

    def wait_for_count(self, prefix: str, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for line in self.lines if line.startswith(prefix)) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"fewer than {n} {prefix!r} lines from the child"
                self._cond.wait(left)

    def send(self, cmds: list[dict[str, object]]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(orjson.dumps(c) + b"\n" for c in cmds))
        self.proc.stdin.flush()

    def send_in_background(self, cmds: list[dict[str, object]]) -> threading.Thread:
        stdin: IO[bytes] | None = self.proc.stdin

        def run() -> None:
            assert stdin is not None
            try:
                for i in range(0, len(cmds), 200):
                    stdin.write(b"".join(orjson.dumps(c) + b"\n" for c in cmds[i : i + 200]))
                    stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the child was killed mid-write: those buys were never sent

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def finish(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0
        self._reader.join(timeout=10)


def acks(lines: list[str]) -> dict[Attempt, str]:
    out: dict[Attempt, str] = {}
    for line in lines:
        if line.startswith("ACK "):
            _, user, sale, key, order = line.split(" ")
            assert out.setdefault((user, sale, key), order) == order, "one key, two orders"
    return out


def check_ledger(db: Path, acked: dict[Attempt, str], attempted: set[Attempt]) -> int:
    conn = sqlite3.connect(db)
    try:
        orders = {
            (u, s, k): o for o, u, s, k in conn.execute("SELECT id, user, sale, key FROM orders")
        }
        for attempt, order_id in acked.items():
            assert orders.get(attempt) == order_id, f"acknowledged order lost: {attempt}"
        for attempt in orders:
            assert attempt in attempted, f"order that nobody attempted: {attempt}"
        for sid, stock, left, sold in conn.execute(
            "SELECT s.id, s.stock, s.stock_left, COALESCE(SUM(o.qty), 0) FROM sales s"
            " LEFT JOIN orders o ON o.sale = s.id GROUP BY s.id"
        ):
            assert left >= 0 and left + sold == stock, (sid, stock, left, sold)
        for pid, free, on_sale in conn.execute(
            "SELECT p.id, p.stock, COALESCE(SUM(s.stock - s.returned), 0) FROM products p"
            " LEFT JOIN sales s ON s.product = p.id GROUP BY p.id"
        ):
            assert free + on_sale == PRODUCT_STOCK, (pid, free, on_sale)
        for uid, sid, units, limit in conn.execute(
            "SELECT o.user, o.sale, SUM(o.qty), s.per_user_limit FROM orders o"
            " JOIN sales s ON s.id = o.sale GROUP BY o.user, o.sale"
        ):
            assert units <= limit, (uid, sid, units, limit)
        return len(orders)
    finally:
        conn.close()


def test_kill_9_mid_rush_loses_no_acknowledged_order(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    db = tmp_path / "souk.db"
    attempted: set[Attempt] = set()
    acked: dict[Attempt, str] = {}
    sales: list[str] = []
    qty_of: dict[Attempt, int] = {}
    kills = 0
    acked_per_round: list[int] = []
    for round_ in range(5):
        child = Child(db)
        child.wait_for("READY")
        # recovery happened: the ledger must already balance
        check_ledger(db, acked, attempted)
        child.send([{"op": "sale", "stock": PRODUCT_STOCK, "limit": 3}])
        sales.append(child.wait_for("SALE ").split(" ")[1])
        burst: list[dict[str, object]] = []
        # replays of acknowledged keys must return the same order after a restart
        replays = rng.sample(sorted(acked), min(20, len(acked)))
        for user, sale, key in replays:
            burst.append(
                {
                    "op": "buy",
                    "user": user,
                    "sale": sale,
                    "qty": qty_of[(user, sale, key)],
                    "key": key,
                }
            )
        for i in range(3000):
            user, sale = f"u{rng.randrange(800)}", rng.choice(sales)
            attempt = (user, sale, f"r{round_}-{i}")
            qty_of[attempt] = rng.randint(1, 3)
            burst.append(
                {
                    "op": "buy",
                    "user": user,
                    "sale": sale,
                    "qty": qty_of[attempt],
                    "key": attempt[2],
                }
            )
        for cmd in burst:
            attempted.add((str(cmd["user"]), str(cmd["sale"]), str(cmd["key"])))
        writer = child.send_in_background(burst)
        # kill at a random point of the rush: after a random number of new acknowledgements
        # (so that writes are in flight), plus a random few milliseconds
        child.wait_for_count("ACK ", len(replays) + rng.randint(1, 150))
        time.sleep(rng.uniform(0, 0.03))
        child.kill9()
        kills += 1
        writer.join(timeout=10)
        got = acks(child.lines)
        for attempt, order in got.items():
            assert acked.setdefault(attempt, order) == order, f"replay made a new order: {attempt}"
        acked_per_round.append(len(got))
        replayed = {(str(c["user"]), str(c["sale"]), str(c["key"])) for c in burst[: len(replays)]}
        for line in child.lines:
            if line.startswith("ERR "):
                _, user, sale, key, code = line.split(" ")
                assert code in {"sold_out", "limit_reached"}, line
                assert (user, sale, key) not in replayed, f"a replay was refused: {line}"
        check_ledger(db, acked, attempted)
    # final recovery run ends cleanly and the books still balance
    child = Child(db)
    child.wait_for("READY")
    child.finish()
    total = check_ledger(db, acked, attempted)
    print(f"seed {seed}: acknowledged per round {acked_per_round}, orders in ledger {total}")
    assert kills == 5
    assert acked, f"no order was acknowledged before any kill (seed {seed})"
    assert total >= len(acked)


def check_teams(db: Path, acked: dict[Attempt, str], attempted: set[Attempt], stock: int) -> None:
    conn = sqlite3.connect(db)
    try:
        orders = {
            (u, o, k): i
            for i, u, o, k in conn.execute(
                "SELECT id, user, offer, key FROM orders WHERE team IS NOT NULL"
            )
        }
        for attempt, order_id in acked.items():
            assert orders.get(attempt) == order_id, f"acknowledged team order lost: {attempt}"
        for attempt in orders:
            assert attempt in attempted, f"team order that nobody attempted: {attempt}"
        for offer, left in conn.execute("SELECT id, stock_left FROM teambuys"):
            held = 0
            open_members: set[str] = set()
            for tid, status, tsize in conn.execute(
                "SELECT id, status, size FROM teams WHERE offer = ?", (offer,)
            ):
                members = conn.execute(
                    "SELECT user, status FROM orders WHERE team = ?", (tid,)
                ).fetchall()
                statuses = {st for _, st in members}
                assert 1 <= len(members) <= tsize, (tid, members)
                if status == "confirmed":
                    assert len(members) == tsize and statuses == {"confirmed"}, (tid, members)
                elif status == "open":
                    assert len(members) < tsize and statuses == {"pending"}, (tid, members)
                    for user, _ in members:
                        assert user not in open_members, f"{user} in two open teams"
                        open_members.add(user)
                else:
                    assert statuses == {"failed"}, (tid, members)
                if status != "failed":
                    held += tsize
            assert left + held == stock, (offer, left, held)
    finally:
        conn.close()


def test_kill_9_mid_team_rush_keeps_teams_whole(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    db = tmp_path / "souk.db"
    stock, size = 300, 3
    attempted: set[Attempt] = set()
    acked: dict[Attempt, str] = {}
    offers: list[str] = []
    per_round: list[int] = []
    for round_ in range(3):
        child = Child(db)
        child.wait_for("READY")
        check_teams(db, acked, attempted, stock)
        child.send([{"op": "offer", "size": size, "stock": stock}])
        offers.append(child.wait_for("OFFER ").split(" ")[1])
        burst: list[dict[str, object]] = []
        for i in range(800):
            attempt = (f"u{rng.randrange(300)}", rng.choice(offers), f"r{round_}-{i}")
            attempted.add(attempt)
            user, offer, key = attempt
            burst.append({"op": "team", "user": user, "offer": offer, "key": key})
        writer = child.send_in_background(burst)
        child.wait_for_count("ACK ", rng.randint(1, 60))
        time.sleep(rng.uniform(0, 0.03))
        child.kill9()
        writer.join(timeout=10)
        got = acks(child.lines)
        per_round.append(len(got))
        for attempt, order in got.items():
            assert acked.setdefault(attempt, order) == order
        for line in child.lines:
            if line.startswith("ERR "):
                assert line.split(" ")[-1] in {"already_in_team", "sold_out"}, line
        check_teams(db, acked, attempted, stock)
    child = Child(db)
    child.wait_for("READY")
    child.finish()
    check_teams(db, acked, attempted, stock)
    print(f"seed {seed}: team orders acknowledged per round {per_round}")
    assert sum(per_round) > 0
