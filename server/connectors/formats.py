"""Connectors and the payload each external platform documents for incoming messages.

A connector mirrors one room's Q&A and notices to one external group. Items are platform-free
dicts (`{"type": "question"|"answer"|"notice", ...}`); `render()` turns one into the request a
platform accepts, and `accepted()` reads the platform's answer (some say "error" with HTTP 200).

Formats and limits, as the platforms document them (see docs/community.md):
- generic: the item as JSON, signed (X-Souk-Timestamp / X-Souk-Signature); 2xx = delivered.
- slack (incoming webhook): `{"text": ...}`; about 1 message per second per webhook; 429 with
  Retry-After when exceeded.
- discord (execute webhook): `{"content": ≤2000 chars, "username", "allowed_mentions"}`;
  dynamic limits in X-RateLimit-* headers (about 5 requests per 2 s per webhook); 429 with
  `retry_after` (seconds) in the JSON body.
- telegram (Bot API sendMessage): POST `<api>/bot<token>/sendMessage` with `{"chat_id",
  "text": ≤4096 chars}`; at most 1 message per second in a chat and 20 per minute in a group;
  the reply is `{"ok": bool}`, 429 carries `parameters.retry_after`.
- wecom (企业微信群机器人): POST `<url>` (…/cgi-bin/webhook/send?key=KEY) with
  `{"msgtype": "text", "text": {"content": ≤2048 bytes}}`; at most 20 messages per minute per
  robot; the reply is `{"errcode": 0}` on success, 45009 when over the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from server.errors import SoukError

PLATFORMS = ("generic", "slack", "discord", "telegram", "wecom")

# (messages, window seconds): at most that many messages in any window of that length
RATE_LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "generic": ((10, 1.0),),
    "slack": ((1, 1.0),),
    "discord": ((5, 2.0),),
    "telegram": ((1, 1.0), (20, 60.0)),
    "wecom": ((20, 60.0),),
}

DISCORD_MAX = 2000
TELEGRAM_MAX = 4096
WECOM_MAX_BYTES = 2048


@dataclass
class Connector:
    """One external destination for a room's items, and the secret for signed traffic."""

    id: str
    shop: str
    room: str
    platform: str
    url: str
    secret: str
    created_at: int
    config: dict[str, Any] = field(default_factory=dict)

    def rate_limits(self) -> tuple[tuple[int, float], ...]:
        custom = self.config.get("rate")
        if custom is not None:
            return ((int(custom[0]), float(custom[1])),)
        return RATE_LIMITS[self.platform]

    def to_dict(self, *, with_secret: bool = False) -> dict[str, Any]:
        out = {
            "id": self.id,
            "shop": self.shop,
            "room": self.room,
            "platform": self.platform,
            "url": self.url,
            "created_at": self.created_at,
            "config": dict(self.config),
        }
        if with_secret:
            out["secret"] = self.secret
        return out


def parse_connector(cid: str, shop: str, fields: Any, secret: str, now_ms: int) -> Connector:
    """Validate `connector_create` fields: room, platform, url, and platform extras."""
    if not isinstance(fields, dict):
        raise SoukError("invalid", "connector fields must be a map")
    room = fields.get("room")
    if not isinstance(room, str) or not 1 <= len(room) <= 64:
        raise SoukError("invalid", "room must be a string of 1..64 characters")
    platform = fields.get("platform", "generic")
    if platform not in PLATFORMS:
        raise SoukError("invalid", f"platform must be one of {', '.join(PLATFORMS)}")
    url = fields.get("url")
    if not isinstance(url, str) or len(url) > 2048:
        raise SoukError("invalid", "url must be a string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SoukError("invalid", "url must be an http(s) URL")
    config: dict[str, Any] = {}
    if platform == "telegram":
        token, chat = fields.get("bot_token"), fields.get("chat_id")
        if not isinstance(token, str) or not token or "/" in token:
            raise SoukError("invalid", "telegram needs bot_token")
        if not isinstance(chat, int | str) or isinstance(chat, bool) or chat == "":
            raise SoukError("invalid", "telegram needs chat_id")
        config["bot_token"], config["chat_id"] = token, chat
    if fields.get("username") is not None:
        if not isinstance(fields["username"], str) or not 1 <= len(fields["username"]) <= 80:
            raise SoukError("invalid", "username must be 1..80 characters")
        config["username"] = fields["username"]
    rate = fields.get("rate")
    if rate is not None:
        if (
            not isinstance(rate, list)
            or len(rate) != 2
            or not isinstance(rate[0], int)
            or not isinstance(rate[1], int | float)
            or not 1 <= rate[0] <= 1000
            or not 0 < rate[1] <= 3600
        ):
            raise SoukError("invalid", "rate must be [messages, window_seconds]")
        config["rate"] = [rate[0], float(rate[1])]
    for key in ("max_attempts",):
        if fields.get(key) is not None:
            value = fields[key]
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 20:
                raise SoukError("invalid", f"{key} must be 1..20")
            config[key] = value
    return Connector(cid, shop, room, platform, url, secret, now_ms, config)


def item_text(item: dict[str, Any]) -> str:
    """One human line for chat platforms."""
    kind = item.get("type")
    if kind == "question":
        return f"❓ {item.get('name', '')}: {item.get('text', '')}  (question {item.get('question')}, {item.get('votes', 0)} votes)"
    if kind == "answer":
        who = item.get("answered_by") or {}
        return f"✅ {who.get('name', 'host')} answered {item.get('name', '')}'s “{item.get('text', '')}”: {item.get('answer', '')}"
    if kind == "notice":
        return f"📣 {item.get('text', '')}"
    return str(item.get("text", ""))


def _clip_chars(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_bytes(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def render(conn: Connector, item: dict[str, Any]) -> tuple[str, bytes]:
    """The URL and JSON body to POST for this item on this connector's platform."""
    text = item_text(item)
    body: dict[str, Any]
    url = conn.url
    if conn.platform == "generic":
        body = {"connector": conn.id, "room": conn.room, **item}
    elif conn.platform == "slack":
        body = {"text": text}
    elif conn.platform == "discord":
        body = {"content": _clip_chars(text, DISCORD_MAX), "allowed_mentions": {"parse": []}}
        if conn.config.get("username"):
            body["username"] = conn.config["username"]
    elif conn.platform == "telegram":
        url = f"{conn.url.rstrip('/')}/bot{conn.config['bot_token']}/sendMessage"
        body = {"chat_id": conn.config["chat_id"], "text": _clip_chars(text, TELEGRAM_MAX)}
    elif conn.platform == "wecom":
        body = {"msgtype": "text", "text": {"content": _clip_bytes(text, WECOM_MAX_BYTES)}}
    else:  # pragma: no cover - parse_connector refuses others
        raise SoukError("invalid", "unknown platform")
    return url, orjson.dumps(body)


@dataclass(frozen=True)
class Verdict:
    """How a delivery attempt went: delivered, or retry (after `retry_after_s`?) or give up."""

    ok: bool
    retry: bool
    error: str = ""
    retry_after_s: float | None = None


def accepted(platform: str, status: int, headers: dict[str, str], body: bytes) -> Verdict:
    """Read a platform's reply. 429 and 5xx are retried; other 4xx are permanent."""
    retry_after = _retry_after(headers, body)
    if status == 429:
        return Verdict(False, True, "429 rate limited", retry_after)
    if status >= 500:
        return Verdict(False, True, f"HTTP {status}")
    if status >= 400:
        return Verdict(False, False, f"HTTP {status}: {body[:200].decode(errors='replace')}")
    if platform in ("telegram", "wecom"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Verdict(False, True, "unreadable reply")
        if platform == "telegram" and not (isinstance(data, dict) and data.get("ok") is True):
            return Verdict(False, True, f"telegram refused: {str(data)[:200]}", retry_after)
        if platform == "wecom" and not (isinstance(data, dict) and data.get("errcode") == 0):
            code = data.get("errcode") if isinstance(data, dict) else None
            # 45009: over the 20/min limit; the robot is throttled for a while
            return Verdict(False, True, f"wecom errcode {code}", 60.0 if code == 45009 else None)
    return Verdict(True, False)


def _retry_after(headers: dict[str, str], body: bytes) -> float | None:
    for key in ("Retry-After", "retry-after", "X-RateLimit-Reset-After"):
        if key in headers:
            try:
                return max(0.0, float(headers[key]))
            except ValueError:
                pass
    if body[:1] == b"{":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if isinstance(data, dict):
            value = data.get("retry_after")
            if value is None and isinstance(data.get("parameters"), dict):
                value = data["parameters"].get("retry_after")
            if isinstance(value, int | float) and not isinstance(value, bool):
                return max(0.0, float(value))
    return None
