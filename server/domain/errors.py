"""Typed refusals: every rule that says no raises `SoukError` with a stable protocol code.

Why here, in the domain: the rules are the first to refuse (sold out, not a member, a
question already answered), and the domain imports nothing of the server; the adapters, the
gateway and the HTTP routes raise and catch this same class (re-exported by
`server.errors`), so one refusal travels from a rule to the client's `error` frame unchanged.
The `code` is always one of `client_sdk.protocol.Code`.
"""

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
