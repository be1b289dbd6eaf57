"""Product pictures uploaded by the studio: sniffed, size-bounded, stored by content hash.

Why so strict: an uploaded file is served from this origin, so a file that a browser would run
(SVG with script, HTML) is stored script. Only PNG, JPEG and WebP are taken, recognised by
their first bytes (the Content-Type the client sent is never trusted), at most `MAX_BYTES`.
A picture is named by its sha256 and type (`<hash>.<ext>`); its URL never changes meaning, so
it is served with a year's `immutable` cache.

Where it lives: in the database (`images`, server/store/images.py), which every node of a
cluster reads, so a picture uploaded through one node shows on pages served by any other;
each node keeps a file cache under `<data dir>/images/`, written to a temporary file and
renamed (a crash leaves either nothing or the whole file) and filled on a node's first read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from server.store.images import ImageStore

log = logging.getLogger("souk.images")

MAX_BYTES: Final = 2 * 1024 * 1024
TYPES: Final = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
NAME: Final = re.compile(r"[0-9a-f]{64}\.(png|jpg|webp)")


def sniff(data: bytes) -> str | None:
    """The picture's extension from its magic bytes, or None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


class Images:
    def __init__(self, store: ImageStore, root: Path, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.root = root
        self.clock_ms = clock_ms

    async def save(self, data: bytes, ext: str) -> str:
        """Record the bytes (durably, for every node), then cache them here; their name."""
        name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        await self.store.put(name, data, self.clock_ms())
        await asyncio.to_thread(self._cache, name, data)
        return name

    async def read(self, name: str) -> tuple[bytes, str] | None:
        """A stored picture's bytes and content type; None for a name that is not one."""
        if not NAME.fullmatch(name):
            return None
        ctype = TYPES[name.rsplit(".", 1)[1]]
        try:
            return (self.root / name).read_bytes(), ctype  # the page cache: no thread hop
        except OSError:
            pass
        data = await self.store.get(name)
        if data is None:
            return None
        await asyncio.to_thread(self._cache, name, data)
        return data, ctype

    def _cache(self, name: str, data: bytes) -> None:
        """Write the node's file of a picture (blocking: run in a thread); a failure only
        costs a database read next time."""
        final = self.root / name
        if final.exists():
            return
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            log.warning("picture %s not cached on disk: %s", name, exc)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
