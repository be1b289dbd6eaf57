"""`souk draw-verify`: recompute a lucky draw from what it published, without trusting Souk.

Feed it the seed and the commitment the room was shown, and the entrant list from
`GET /api/draws/<id>/entrants` (that JSON as saved, or a text file with one entrant hash per
line); it checks `sha256(seed) == commitment`, recomputes the list's digest and the winners
with the documented function (server/domain/draw.py `pick`), and compares them with the
published winners when the file carries them. Exit status: 0 all checks pass, 1 a check
failed, 2 the input could not be read. docs/draws.md says what this proves and what not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from server.domain.draw import entrant_hash, verify
from server.errors import SoukError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--entrants", required=True, type=Path,
                   help="the JSON of GET /api/draws/<id>/entrants, or one entrant hash per line")
    p.add_argument("--seed", help="the revealed seed (hex; default: the file's)")
    p.add_argument("--commitment", help="the commitment shown at the start (hex; default: the file's)")
    p.add_argument("--winners", type=int, help="how many winners were drawn (default: the file's)")
    p.add_argument("--beacon", help="the beacon round's randomness (hex) if one was mixed in"
                                    " (default: the file's, when its status is ok)")
    p.add_argument("--user", action="append", default=[],
                   help="a user id to look for among the entrants and winners (repeatable)")


def _read(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"entrants": raw.decode().split()}
    if isinstance(data, list):
        return {"entrants": data}
    if not isinstance(data, dict) or not isinstance(data.get("entrants"), list):
        raise ValueError("a JSON file must be the entrant list or the API's answer with 'entrants'")
    return data


def run(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    try:
        data = _read(args.entrants)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"souk draw-verify: cannot read {args.entrants}: {exc}", file=sys.stderr)
        return 2
    seed = args.seed or data.get("seed")
    commitment = args.commitment or data.get("commitment")
    k = args.winners if args.winners is not None else data.get("winners_count")
    beacon = args.beacon
    if beacon is None and isinstance(data.get("beacon"), dict) and data["beacon"].get("status") == "ok":
        beacon = data["beacon"].get("randomness")
    missing = [n for n, v in (("--seed", seed), ("--commitment", commitment), ("--winners", k)) if not v]
    if missing:
        print(f"souk draw-verify: {', '.join(missing)} needed (not in the file)", file=sys.stderr)
        return 2
    published = data.get("winners") if isinstance(data.get("winners"), list) else None
    try:
        v = verify(str(seed), str(commitment), [str(h) for h in data["entrants"]], int(str(k)),
                   beacon, published, data.get("digest"))
    except (SoukError, ValueError) as exc:
        print(f"souk draw-verify: {exc}", file=sys.stderr)
        return 2
    print(f"commitment   {'ok' if v.commitment_ok else 'MISMATCH: sha256(seed) is not the commitment'}",
          file=out)
    print(f"entrants     {len(set(data['entrants']))}, digest {v.digest}", file=out)
    if data.get("digest") is not None:
        print(f"digest       {'ok' if data['digest'] == v.digest else 'MISMATCH with the published digest'}",
              file=out)
    print(f"beacon       {'mixed in: ' + beacon if beacon else 'none (the seed alone)'}", file=out)
    for i, h in enumerate(v.winners, 1):
        print(f"winner {i:<5} {h}", file=out)
    if published is not None:
        print(f"published    {'the same winners' if v.matches else 'MISMATCH with the published winners'}",
              file=out)
    for user in args.user:
        h = entrant_hash(user)
        entered = h in {str(e).lower() for e in data["entrants"]}
        print(f"user {user}: {'entered' if entered else 'not in the list'}"
              f"{', won' if h in v.winners else ''}", file=out)
    print("verified" if v.ok else "NOT verified", file=out)
    return 0 if v.ok else 1
