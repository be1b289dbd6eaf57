"""A room's replays (回放) as values: chapters, and what a replay's listing shows.

Why pure: when a chapter falls in a recording, and how a replay is described to a viewer, are
rules (a chapter at the moment the product was pinned or its sale started, within the
recording, in order); the feature (server/replays.py) only feeds them times and rows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from client_sdk.protocol import Code
from server.domain.errors import SoukError

CHAPTER_KINDS = ("pin", "sale")
MAX_CHAPTERS = 500  # per recording: a chapter per pin or sale; more is a script, not a show
MAX_TITLE = 200


@dataclass(frozen=True, slots=True)
class Chapter:
    """A moment of a recording where a product was shown: ``at_ms`` into the file."""

    at_ms: int
    kind: str
    product: str
    title: str
    image: str

    def view(self) -> dict[str, Any]:
        return {"at_s": round(self.at_ms / 1000, 3), "kind": self.kind, "product": self.product,
                "title": self.title, "image": self.image}


def chapter(kind: str, product: dict[str, Any], elapsed_s: float) -> Chapter:
    """The chapter for ``product`` (a catalogue product's map) shown ``elapsed_s`` into the
    recording."""
    if kind not in CHAPTER_KINDS:
        raise SoukError(Code.INVALID, f"a chapter is one of {', '.join(CHAPTER_KINDS)}")
    pid = product.get("id")
    if not isinstance(pid, str) or not pid:
        raise SoukError(Code.INVALID, "a chapter names a product")
    title = str(product.get("title") or "")[:MAX_TITLE]
    image = str(product.get("image") or "")
    return Chapter(max(0, int(elapsed_s * 1000)), kind, pid, title, image)


def listing(row: dict[str, Any], chapters: list[Chapter], url: str) -> dict[str, Any]:
    """One replay as `GET /api/rooms/<id>/replays` lists it."""
    return {
        "id": row["id"],
        "started_at": row["started_at"],
        "duration_s": round(int(row["duration_ms"]) / 1000, 3),
        "size": int(row["size"]),
        "url": url,
        "status": row["status"],
        "chapters": [c.view() for c in sorted(chapters, key=lambda c: c.at_ms)],
    }


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def recording_id(room: str, started_ms: int, counter: int = 0) -> str:
    """A recording's id, also its file name without extension: safe in a path and a URL.

    The room id is hashed in (it may hold characters a file name must not), the start time
    orders them, and ``counter`` tells apart two lives started in the same millisecond.
    """
    digest = hashlib.sha256(room.encode()).hexdigest()[:10]
    return f"{started_ms:013d}-{digest}-{counter}"


def valid_recording_id(value: object) -> bool:
    return isinstance(value, str) and bool(_NAME.fullmatch(value))


def expired(started_ms: list[tuple[str, int]], now_ms: int, retention_days: float) -> list[str]:
    """The ids among ``(id, started_ms)`` older than ``retention_days`` (0: keep all)."""
    if retention_days <= 0:
        return []
    limit = now_ms - int(retention_days * 86_400_000)
    return [rid for rid, started in started_ms if started < limit]
