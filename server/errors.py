"""Typed errors: every refusal carries a stable protocol code (client_sdk.protocol.Code)."""

from __future__ import annotations

from typing import Any


class SoukError(Exception):
    """A refusal the client should see as `{"op": "error", "code", "message", ...extra}`."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def __repr__(self) -> str:
        return f"SoukError({self.code!r}, {self.message!r})"
