"""Typed refusals of the media relay.

``code`` uses the same strings as ``client_sdk.protocol.Code`` (``not_found``, ``invalid``,
``conflict``, ``unavailable``) so the gateway can turn a MediaError into an ``error`` frame
unchanged; media/ does not import the SDK to stay a self-contained package.
"""

from __future__ import annotations

from typing import Final

NOT_FOUND: Final = "not_found"
INVALID: Final = "invalid"
CONFLICT: Final = "conflict"
UNAVAILABLE: Final = "unavailable"


class MediaError(Exception):
    """A refusal the signalling client should see as ``{"op": "error", "code", "message"}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"MediaError({self.code!r}, {self.message!r})"
