"""The Souk wire contract, v1: op names, error and close codes, frame encoding.

This module is the single definition of the protocol. The server imports it from here, so
the SDK (the public face of the protocol) and the implementation can never disagree.
Every frame is a map; see README "Protocol" for each op's fields.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgpack
import orjson

SUBPROTOCOL_MSGPACK: Final = "souk.v1.msgpack"
SUBPROTOCOL_JSON: Final = "souk.v1.json"
SUBPROTOCOLS: Final = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)

Frame = dict[str, Any]


class Op:
    """Op names, named after what a user does."""

    # replies and pushes (server -> client)
    OK: Final = "ok"
    ERROR: Final = "error"
    EVENT: Final = "event"
    BATCH: Final = "batch"
    # session
    AUTH: Final = "auth"
    PING: Final = "ping"
    JOIN: Final = "join"
    LEAVE: Final = "leave"
    RESUME: Final = "resume"
    # room
    CHAT: Final = "chat"
    LIKE: Final = "like"
    PIN: Final = "pin"
    ROOM_CREATE: Final = "room_create"
    ROOM_STATE: Final = "room_state"
    # moderation
    MUTE: Final = "mute"
    BAN: Final = "ban"
    WARN: Final = "warn"
    REMOVE: Final = "remove"
    DELETE_MESSAGE: Final = "delete_message"
    # Q&A
    ASK: Final = "ask"
    UPVOTE: Final = "upvote"
    ANSWER: Final = "answer"
    DISMISS: Final = "dismiss"
    # commerce
    PRODUCT_CREATE: Final = "product_create"
    SALE_CREATE: Final = "sale_create"
    SALE_CANCEL: Final = "sale_cancel"
    BUY: Final = "buy"
    ORDERS_MINE: Final = "orders_mine"
    SALES_STATS: Final = "sales_stats"
    TEAMBUY_CREATE: Final = "teambuy_create"
    TEAM_OPEN: Final = "team_open"
    TEAM_JOIN: Final = "team_join"
    TEAMS_MINE: Final = "teams_mine"
    # community groups
    GROUP_CREATE: Final = "group_create"
    GROUP_JOIN: Final = "group_join"
    GROUP_LEAVE: Final = "group_leave"
    GROUP_MEMBERS: Final = "group_members"
    LINK_GROUPS: Final = "link_groups"
    NOTICE: Final = "notice"
    CONNECTOR_CREATE: Final = "connector_create"
    # media signalling
    PUBLISH: Final = "publish"
    UNPUBLISH: Final = "unpublish"
    WATCH: Final = "watch"
    UNWATCH: Final = "unwatch"
    ICE: Final = "ice"
    # lucky draws
    DRAW_CREATE: Final = "draw_create"
    DRAW_ENTER: Final = "draw_enter"
    DRAW_CANCEL: Final = "draw_cancel"
    DRAWS: Final = "draws"


class Code:
    """Stable error codes carried by `{"op": "error", "code": ...}` frames."""

    BAD_FRAME: Final = "bad_frame"
    TOO_LARGE: Final = "too_large"
    UNAUTHORIZED: Final = "unauthorized"
    FORBIDDEN: Final = "forbidden"
    RATE_LIMITED: Final = "rate_limited"
    NOT_FOUND: Final = "not_found"
    INVALID: Final = "invalid"
    CONFLICT: Final = "conflict"
    UNKNOWN_OP: Final = "unknown_op"
    MUTED: Final = "muted"
    BANNED: Final = "banned"
    FILTERED: Final = "filtered"
    UNAVAILABLE: Final = "unavailable"
    INTERNAL: Final = "internal"
    # commerce
    SOLD_OUT: Final = "sold_out"
    LIMIT_REACHED: Final = "limit_reached"
    NOT_LIVE: Final = "not_live"
    ENDED: Final = "ended"
    TEAM_FULL: Final = "team_full"
    ALREADY_IN_TEAM: Final = "already_in_team"
    # community
    GROUP_FULL: Final = "group_full"
    CAP_REACHED: Final = "cap_reached"


class Close:
    """Websocket close codes the server uses, and why."""

    NORMAL: Final = 1000
    POLICY: Final = 1008  # repeated abuse (too many errors or rate-limit hits)
    TOO_BIG: Final = 1009  # a frame above the transport limit
    RESTARTING: Final = 1012  # server draining: reconnect (elsewhere) and resume
    AUTH_TIMEOUT: Final = 4401  # no valid auth within the deadline
    SLOW_CONSUMER: Final = 4408  # outbound buffer above the hard bound: reconnect and resume
    KICKED: Final = 4403  # banned or removed by a moderator


class Role:
    STREAMER: Final = "streamer"
    MODERATOR: Final = "moderator"
    VIEWER: Final = "viewer"
    MEMBER: Final = "member"
    ADMIN: Final = "admin"
    ALL: Final = ("streamer", "moderator", "viewer", "member", "admin")


def room_channel(room: str) -> str:
    return f"room:{room}"


def group_channel(group: str) -> str:
    return f"group:{group}"


def user_channel(user: str) -> str:
    return f"user:{user}"


def staff_channel(room: str) -> str:
    return f"staff:{room}"


class DecodeError(ValueError):
    """The bytes are not a frame: wrong encoding, not a map, or no string `op`."""


def encode(frame: Frame, subprotocol: str) -> bytes:
    """Encode a frame for the given subprotocol (msgpack: binary, json: UTF-8 text)."""
    if subprotocol == SUBPROTOCOL_MSGPACK:
        return msgpack.packb(frame, use_bin_type=True)  # type: ignore[no-any-return]
    return orjson.dumps(frame)


def _pairs_unique(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DecodeError("duplicate key in a map")
    return obj


def _unique_keys(data: bytes | str, obj: Frame, subprotocol: str) -> None:
    """Refuse a map that names a key twice (`{"op":"ping","op":"auth"}`): the two decoders
    keep the last silently, so two readers of the same bytes could disagree on what was sent.

    Neither orjson nor msgpack's fast path reports duplicates. The cheap proof: re-encoding
    the decoded frame gives back the very bytes received (a map that lost a key cannot). What
    our SDKs and `JSON.stringify` send passes that test; anything else (spaces, other number
    spellings, escapes) is parsed again by a decoder that sees every pair.
    """
    if subprotocol == SUBPROTOCOL_MSGPACK:
        if msgpack.packb(obj, use_bin_type=True) == data:
            return
        msgpack.unpackb(data, raw=False, strict_map_key=True,
                        object_pairs_hook=_pairs_unique)
        return
    raw = data.encode() if isinstance(data, str) else data
    if orjson.dumps(obj) == raw:
        return
    json.loads(raw, object_pairs_hook=_pairs_unique)


def decode_strict(data: bytes | str, subprotocol: str) -> Frame:
    """Decode what a client sent, as the server accepts it: `decode`, plus the frame type
    must match the encoding (msgpack in binary frames, JSON in text frames) and no map may
    name a key twice."""
    if isinstance(data, str) != (subprotocol == SUBPROTOCOL_JSON):
        raise DecodeError("JSON frames must be text frames" if subprotocol == SUBPROTOCOL_JSON
                          else "msgpack frames must be binary")
    obj = decode(data, subprotocol)
    try:
        _unique_keys(data, obj, subprotocol)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"undecodable frame: {type(exc).__name__}") from None
    return obj


def decode(data: bytes | str, subprotocol: str) -> Frame:
    """Decode one frame; raise DecodeError for anything that is not a map with a string op."""
    try:
        if subprotocol == SUBPROTOCOL_MSGPACK:
            if isinstance(data, str):
                raise DecodeError("msgpack frames must be binary")
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            obj = orjson.loads(data)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many types; all mean the same to a peer
        raise DecodeError(f"undecodable frame: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise DecodeError("a frame must be a map")
    if not isinstance(obj.get("op"), str):
        raise DecodeError("a frame needs a string 'op'")
    return obj
