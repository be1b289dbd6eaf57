"""What a community op's client frame may carry: the op names and the field checks.

Why a module of its own: the Q&A, group, notice and connector code all validate the same
user dicts and frame fields and mint ids the same way; keeping the checks in one place keeps
the refusals (code and wording) identical whichever op a client sent.
"""

from __future__ import annotations

import secrets
from typing import Any

from client_sdk.protocol import Code
from server.domain.community import STAFF_ROLES
from server.errors import SoukError

OPS = (
    "ask",
    "upvote",
    "answer",
    "dismiss",
    "group_create",
    "group_join",
    "group_leave",
    "remove",
    "group_members",
    "link_groups",
    "notice",
    "connector_create",
)


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(6)


def _user(user: dict[str, Any]) -> tuple[str, str, str]:
    uid, name, role = user.get("id"), user.get("name"), user.get("role")
    if not isinstance(uid, str) or not uid:
        raise SoukError(Code.INVALID, "user id required")
    return uid, (name if isinstance(name, str) and name else uid)[:64], str(role or "viewer")


def _field(frame: dict[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise SoukError(Code.INVALID, f"{key} must be a string of 1..64 characters")
    return value


def _opt_field(frame: dict[str, Any], key: str) -> str | None:
    return None if frame.get(key) is None else _field(frame, key)


def _shop(shop: str | None) -> str:
    if not shop:
        raise SoukError(Code.INVALID, "this op needs the room's shop")
    return shop


def _require_staff(user: dict[str, Any], what: str) -> None:
    if user.get("role") not in STAFF_ROLES:
        raise SoukError(Code.FORBIDDEN, f"only the streamer, moderators and admins may {what}")
