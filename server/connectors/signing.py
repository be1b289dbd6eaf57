"""Signed webhooks: HMAC-SHA256 over `timestamp + "." + body`, with a replay window.

The scheme (the same both ways, out to a receiver and in to Souk):
- `X-Souk-Timestamp`: milliseconds since the epoch when the request was signed;
- `X-Souk-Signature`: `sha256=<hex>` of HMAC-SHA256(secret, f"{timestamp}.".encode() + body).
Signing the timestamp with the body stops an attacker from re-dating a captured request; the
±300 s window bounds how long a capture is worth anything, and the verifier remembers the
signatures it accepted within the window, so the same request is accepted only once.
Comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping

HEADER_TIMESTAMP = "X-Souk-Timestamp"
HEADER_SIGNATURE = "X-Souk-Signature"
WINDOW_S = 300
PREFIX = "sha256="


class SignatureError(Exception):
    """A request that must be refused (401): missing, stale, forged or replayed."""


def sign(secret: str, body: bytes, ts_ms: int) -> str:
    mac = hmac.new(secret.encode(), f"{ts_ms}.".encode() + body, hashlib.sha256)
    return PREFIX + mac.hexdigest()


def signed_headers(secret: str, body: bytes, ts_ms: int) -> dict[str, str]:
    return {HEADER_TIMESTAMP: str(ts_ms), HEADER_SIGNATURE: sign(secret, body, ts_ms)}


class Verifier:
    """Checks signatures and refuses replays seen within the window (bounded memory)."""

    def __init__(self, *, window_s: int = WINDOW_S, max_remembered: int = 100_000) -> None:
        self.window_ms = window_s * 1000
        self.max_remembered = max_remembered
        self._seen: OrderedDict[str, int] = OrderedDict()

    def verify(self, secret: str, body: bytes, headers: Mapping[str, str], now_ms: int) -> int:
        """Return the request's timestamp, or raise SignatureError."""
        raw_ts = headers.get(HEADER_TIMESTAMP)
        raw_sig = headers.get(HEADER_SIGNATURE)
        if not raw_ts or not raw_sig:
            raise SignatureError("missing signature headers")
        if not raw_ts.isdigit() or len(raw_ts) > 16:
            raise SignatureError("bad timestamp")
        ts = int(raw_ts)
        if abs(now_ms - ts) > self.window_ms:
            raise SignatureError("timestamp outside the replay window")
        expected = sign(secret, body, ts)
        if not hmac.compare_digest(expected.encode(), raw_sig.strip().encode()):
            raise SignatureError("bad signature")
        self._forget(now_ms)
        if expected in self._seen:
            raise SignatureError("replayed request")
        self._seen[expected] = ts
        return ts

    def _forget(self, now_ms: int) -> None:
        while self._seen:
            _sig, ts = next(iter(self._seen.items()))
            if ts >= now_ms - self.window_ms and len(self._seen) < self.max_remembered:
                break
            self._seen.popitem(last=False)
