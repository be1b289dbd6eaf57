"""Typed exceptions for error frames: catch the class, or read `.code` (client_sdk.protocol.Code)."""

from __future__ import annotations

from typing import Any, Final

from client_sdk.protocol import Code

# Raised by the client itself, never carried by an error frame: not a `Code` of the protocol.
CONNECTION_LOST: Final = "connection_lost"


class SoukError(Exception):
    """The server refused a request: `code` is the stable protocol code, `message` says why."""

    code = "error"

    def __init__(self, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.extra = extra or {}


class ConnectionLost(SoukError):
    """The connection dropped before the reply came; an idempotent request may be retried."""

    def __init__(self, message: str = "connection lost") -> None:
        super().__init__(CONNECTION_LOST, message)


class Unauthorized(SoukError): ...
class Forbidden(SoukError): ...
class RateLimited(SoukError): ...
class NotFound(SoukError): ...
class Invalid(SoukError): ...
class Conflict(SoukError): ...
class BadFrame(SoukError): ...
class TooLarge(SoukError): ...
class SoldOut(SoukError): ...
class LimitReached(SoukError): ...
class NotLive(SoukError): ...
class Ended(SoukError): ...


_BY_CODE: dict[str, type[SoukError]] = {
    Code.UNAUTHORIZED: Unauthorized,
    Code.FORBIDDEN: Forbidden,
    Code.RATE_LIMITED: RateLimited,
    Code.NOT_FOUND: NotFound,
    Code.INVALID: Invalid,
    Code.CONFLICT: Conflict,
    Code.BAD_FRAME: BadFrame,
    Code.TOO_LARGE: TooLarge,
    Code.SOLD_OUT: SoldOut,
    Code.LIMIT_REACHED: LimitReached,
    Code.NOT_LIVE: NotLive,
    Code.ENDED: Ended,
}


def error_from_frame(frame: dict[str, Any]) -> SoukError:
    code = str(frame.get("code", "error"))
    extra = {k: v for k, v in frame.items() if k not in ("op", "rid", "code", "message")}
    return _BY_CODE.get(code, SoukError)(code, str(frame.get("message", "")), extra)
