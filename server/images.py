"""Product pictures uploaded by the studio: sniffed, size-bounded, stored by content hash.

Why so strict: an uploaded file is served from this origin, so a file that a browser would run
(SVG with script, HTML) is stored script. Only PNG, JPEG and WebP are taken, recognised by
their first bytes (the Content-Type the client sent is never trusted), at most `MAX_BYTES`.
A picture is stored once under its sha256 (`<data dir>/images/<hash>.<ext>`), written to a
temporary file, flushed and renamed, so a crash leaves either nothing or the whole file; its
URL never changes meaning, so it is served with a year's `immutable` cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Final

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


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, data: bytes, ext: str) -> str:
        """Store the bytes (blocking: run in a thread); their file name."""
        name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        final = self.root / name
        if final.exists():
            return name
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return name

    def read(self, name: str) -> tuple[bytes, str] | None:
        """A stored picture's bytes and content type; None for a name that is not one."""
        if not NAME.fullmatch(name):
            return None
        try:
            data = (self.root / name).read_bytes()
        except OSError:
            return None
        return data, TYPES[name.rsplit(".", 1)[1]]
