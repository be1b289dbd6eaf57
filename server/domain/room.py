"""A live room or a community group as a conversation: presence, chat, likes, pin, moderation.

Sans-I/O: methods take the acting user and `now_ms`, validate, change state and return the
event to publish as `(type, fields)`. The adapter (server/rooms.py) publishes and runs timers.
Rooms and groups share this class because a group is "everything the room has, reused".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from client_sdk.protocol import Code
from server.domain.errors import SoukError

ROOM_STATES = ("idle", "live", "paused", "ended")
MAX_CHAT_CHARS = 500
MAX_TITLE_CHARS = 200
MAX_LIKES_PER_OP = 100
MAX_MUTE_S = 7 * 24 * 3600
MAX_CID_CHARS = 64

Event = tuple[str, dict[str, Any]]

# Who may sanction whom: nobody sanctions a rank at or above their own. Roles not named here
# (viewer, member, a user never seen) rank lowest.
RANKS: dict[str, int] = {"admin": 3, "streamer": 2, "moderator": 1}
STAFF_ROLES = frozenset(RANKS)


def rank(role: str | None) -> int:
    return RANKS.get(role or "", 0)


@dataclass(slots=True)
class Actor:
    """Who acts: enough of the token to decide and to label events."""

    id: str
    name: str
    role: str

    @property
    def is_staff(self) -> bool:
        return self.role in ("streamer", "moderator", "admin")


@dataclass
class Room:
    """State of one channel-backed conversation (`room:<id>` or `group:<id>`)."""

    id: str
    kind: str = "room"  # "room" | "group"
    title: str = ""
    shop: str = "default"
    owned: bool = False  # a streamer created it or went live in it: `shop` is theirs
    state: str = "idle"
    history_limit: int = 50
    pinned: dict[str, Any] | None = None
    likes: int = 0
    likes_published: int = 0
    presence: dict[str, int] = field(default_factory=dict)  # viewer id -> open sessions
    # the streamer, moderators and admins in the room: not "watching", counted apart
    staff_presence: dict[str, int] = field(default_factory=dict)
    chat: deque[dict[str, Any]] = field(default_factory=deque)
    muted_until: dict[str, int] = field(default_factory=dict)
    banned: set[str] = field(default_factory=set)
    staff: dict[str, str] = field(default_factory=dict)  # user id -> staff role seen here
    next_msg: int = 1
    viewers_published: int = -1
    video_viewers: int = 0  # viewers receiving this room's video on this node (the relay's)
    video_published: int = 0
    likes_saved: int = 0  # the part of `likes` already added to the stored total

    # ---- presence -------------------------------------------------------------------
    @property
    def viewers(self) -> int:
        """Who is watching: the people in the room who are not its staff."""
        return len(self.presence)

    @property
    def staff_present(self) -> int:
        """The streamer, moderators and admins in the room now."""
        return len(self.staff_presence)

    def enter(self, actor: Actor) -> None:
        if actor.id in self.banned:
            raise SoukError(Code.BANNED, "you are banned from this room")
        where = self.staff_presence if actor.is_staff else self.presence
        where[actor.id] = where.get(actor.id, 0) + 1

    def exit(self, user_id: str) -> None:
        where = self.presence if user_id in self.presence else self.staff_presence
        n = where.get(user_id, 0)
        if n <= 1:
            where.pop(user_id, None)
        else:
            where[user_id] = n - 1

    def viewers_changed(self) -> Event | None:
        """The throttled presence event, if the count (or the viewers receiving video) moved
        since the last one."""
        if self.viewers == self.viewers_published and self.video_viewers == self.video_published:
            return None
        self.viewers_published = self.viewers
        self.video_published = self.video_viewers
        return ("viewers", {"count": self.viewers, "video_viewers": self.video_viewers})

    # ---- chat -----------------------------------------------------------------------
    def check_may_speak(self, actor: Actor, now_ms: int) -> None:
        if actor.id in self.banned:
            raise SoukError(Code.BANNED, "you are banned from this room")
        until = self.muted_until.get(actor.id)
        if until is not None:
            if until > now_ms:
                raise SoukError(Code.MUTED, "you are muted", until=until)
            del self.muted_until[actor.id]
        if self.state == "ended" and not actor.is_staff:
            raise SoukError(Code.CONFLICT, "the room has ended")

    def chat_message(self, actor: Actor, text: Any, reply_to: Any, now_ms: int,
                     cid: Any = None) -> Event:
        """Compose a message and keep it in the history (where no record is written first)."""
        msg = self.compose_chat(actor, text, reply_to, now_ms, cid)
        self.keep_chat(msg)
        return ("chat", msg)

    def compose_chat(self, actor: Actor, text: Any, reply_to: Any, now_ms: int,
                     cid: Any = None) -> dict[str, Any]:
        """A validated message with its id, not yet in the history: the adapter records it
        first, then `keep_chat`s and publishes it."""
        self.check_may_speak(actor, now_ms)
        if not isinstance(text, str) or not text.strip():
            raise SoukError(Code.INVALID, "text must be a non-empty string")
        if len(text) > MAX_CHAT_CHARS:
            raise SoukError(Code.INVALID, f"text is longer than {MAX_CHAT_CHARS} characters")
        if reply_to is not None and (not isinstance(reply_to, str) or len(reply_to) > 64):
            raise SoukError(Code.INVALID, "reply_to must be a message id")
        msg = {
            "id": f"m{self.next_msg}",
            "user": actor.id,
            "name": actor.name,
            "role": actor.role,
            "text": text,
            "reply_to": reply_to,
            "at": now_ms,
        }
        if cid is not None:
            msg["cid"] = check_cid(cid)
        self.next_msg += 1
        return msg

    def keep_chat(self, msg: dict[str, Any]) -> None:
        self.chat.append(msg)
        while len(self.chat) > self.history_limit:
            self.chat.popleft()

    def resent(self, user_id: str, cid: Any) -> dict[str, Any] | None:
        """The message this user already sent with this client id, if still in the history."""
        if cid is None:
            return None
        cid = check_cid(cid)
        for msg in reversed(self.chat):
            if msg.get("cid") == cid and msg["user"] == user_id:
                found: dict[str, Any] = msg
                return found
        return None

    def restore(self, messages: list[dict[str, Any]], likes: int) -> None:
        """The stored history and like total, after a restart: ids continue past the stored
        ones, and the total is not saved again."""
        known = {m["id"] for m in messages}
        merged = [*messages, *(m for m in self.chat if m["id"] not in known)]
        self.chat = deque(merged[-self.history_limit:])
        for msg in messages:
            ident = msg.get("id", "")
            if ident[:1] == "m" and ident[1:].isdigit():
                self.next_msg = max(self.next_msg, int(ident[1:]) + 1)
        self.likes += likes
        self.likes_saved += likes
        self.likes_published = self.likes

    def delete_message(self, actor: Actor, message_id: Any) -> Event:
        _require_staff(actor)
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 64:
            raise SoukError(Code.INVALID, "message must be a message id")
        for msg in self.chat:
            if msg["id"] == message_id:
                author = msg["user"]
                # rank, as for sanctions: the message says what its author was when they wrote
                if author != actor.id and max(rank(self.staff.get(author)),
                                              rank(msg.get("role"))) >= rank(actor.role):
                    raise SoukError(Code.FORBIDDEN, "you may not delete a message of someone of your rank or above")
                self.chat.remove(msg)
                break
        return ("message_deleted", {"id": message_id, "by": actor.id})

    # ---- likes ----------------------------------------------------------------------
    def like(self, count: Any) -> None:
        """Count likes; they are published aggregated by the adapter, never one per tap."""
        if count is None:
            count = 1
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_LIKES_PER_OP:
            raise SoukError(Code.INVALID, f"count must be an integer 1..{MAX_LIKES_PER_OP}")
        self.likes += count

    def likes_changed(self) -> Event | None:
        if self.likes == self.likes_published:
            return None
        self.likes_published = self.likes
        return ("likes", {"total": self.likes})

    # ---- streamer controls ----------------------------------------------------------
    def set_title(self, actor: Actor, title: Any) -> None:
        _require_staff(actor)
        if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
            raise SoukError(Code.INVALID, f"title must be a string of at most {MAX_TITLE_CHARS} characters")
        self.title = title

    def set_state(self, actor: Actor, state: Any) -> Event:
        _require_staff(actor)
        if state not in ROOM_STATES or state == "idle":
            raise SoukError(Code.INVALID, "state must be live, paused or ended")
        self.state = state
        return ("state", {"state": state})

    def pin(self, actor: Actor, product: dict[str, Any] | None) -> Event:
        _require_staff(actor)
        self.pinned = product
        return ("pinned", {"product": product})

    def claim(self, shop: str) -> bool:
        """The first streamer to create the room or go live in it makes it their shop's.
        Returns whether this call claimed it (the caller records the room)."""
        if self.owned:
            return False
        self.shop, self.owned = shop, True
        return True

    # ---- moderation -----------------------------------------------------------------
    def saw_staff(self, actor: Actor) -> bool:
        """A staff member acted or joined here: remember their role (their rank protects them
        while offline). Returns whether this is new (the caller records it)."""
        if actor.role not in STAFF_ROLES or self.staff.get(actor.id) == actor.role:
            return False
        self.staff[actor.id] = actor.role
        return True

    def check_rank(self, actor: Actor, target: str) -> None:
        """Nobody sanctions a rank at or above their own (admin > streamer > moderator >
        everyone else); a user not seen here as staff ranks lowest."""
        if rank(self.staff.get(target)) >= rank(actor.role):
            raise SoukError(Code.FORBIDDEN, "you may not sanction someone of your rank or above")

    def mute(self, actor: Actor, user_id: Any, seconds: Any, now_ms: int) -> Event:
        _require_staff(actor)
        target = _target(user_id)
        if target == actor.id:
            raise SoukError(Code.INVALID, "you cannot mute yourself")
        self.check_rank(actor, target)
        if seconds is None:
            seconds = 300
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= MAX_MUTE_S:
            raise SoukError(Code.INVALID, f"seconds must be an integer 1..{MAX_MUTE_S}")
        until = now_ms + seconds * 1000
        self.muted_until[target] = until
        return ("muted", {"user": target, "until": until, "by": actor.id})

    def ban(self, actor: Actor, user_id: Any) -> Event:
        _require_staff(actor)
        target = _target(user_id)
        if target == actor.id:
            raise SoukError(Code.INVALID, "you cannot ban yourself")
        self.check_rank(actor, target)
        self.banned.add(target)
        self.presence.pop(target, None)
        self.chat = deque(m for m in self.chat if m["user"] != target)
        return ("banned", {"user": target, "by": actor.id})

    def unban(self, actor: Actor, user_id: Any) -> Event:
        """Lift a ban (idempotent: a ban recorded on another node is lifted all the same)."""
        _require_staff(actor)
        target = _target(user_id)
        self.banned.discard(target)
        return ("unbanned", {"user": target, "by": actor.id})

    def unmute(self, actor: Actor, user_id: Any) -> Event:
        _require_staff(actor)
        target = _target(user_id)
        self.muted_until.pop(target, None)
        return ("unmuted", {"user": target, "by": actor.id})

    # ---- snapshot -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "state": self.state,
            "viewers": self.viewers,
            "likes": self.likes,
            "pinned": self.pinned,
            "chat": list(self.chat),
        }


def check_cid(cid: Any) -> str:
    """A client message id: a short printable string the sender chose."""
    if not isinstance(cid, str) or not 1 <= len(cid) <= MAX_CID_CHARS or not cid.isprintable():
        raise SoukError(Code.INVALID, f"cid must be a string of 1..{MAX_CID_CHARS} printable characters")
    return cid


def _require_staff(actor: Actor) -> None:
    if not actor.is_staff:
        raise SoukError(Code.FORBIDDEN, "only the streamer or a moderator may do this")


def _target(user_id: Any) -> str:
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 128:
        raise SoukError(Code.INVALID, "user must be a user id")
    return user_id
