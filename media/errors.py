"""Typed refusals of the media relay.

``code`` is one of ``client_sdk.protocol.Code`` (``not_found``, ``invalid``, ``conflict``,
``unavailable``): the wire contract is a small module of its own, not the server, so the relay
raises the protocol's codes and the gateway turns a MediaError into an ``error`` frame
unchanged.
"""

from __future__ import annotations


class MediaError(Exception):
    """A refusal the signalling client should see as ``{"op": "error", "code", "message"}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"MediaError({self.code!r}, {self.message!r})"
