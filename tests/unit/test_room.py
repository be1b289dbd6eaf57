"""Room rules without sockets: presence, chat history, likes aggregation, moderation."""

from __future__ import annotations

import pytest

from server.domain.ratelimit import StrikeCounter, TokenBucket, UserBuckets
from server.domain.room import Actor, Room
from server.errors import SoukError

V = Actor("v", "Viewer", "viewer")
M = Actor("m", "Mod", "moderator")


def test_presence_counts_users_not_connections_and_not_staff() -> None:
    r = Room("r")
    r.enter(V)
    r.enter(V)
    r.enter(M)  # a moderator is in the room, not watching it
    assert (r.viewers, r.staff_present) == (1, 1)
    r.exit("v")
    assert r.viewers == 1
    r.exit("v")
    assert r.viewers == 0
    r.exit("m")
    assert r.staff_present == 0
    assert r.viewers_changed() == ("viewers", {"count": 0, "video_viewers": 0})
    assert r.viewers_changed() is None
    r.video_viewers = 3  # the relay's count moved: told once, with the presence count
    assert r.viewers_changed() == ("viewers", {"count": 0, "video_viewers": 3})
    assert r.viewers_changed() is None


def test_chat_history_is_bounded_and_ids_increase() -> None:
    r = Room("r", history_limit=3)
    ids = [r.chat_message(V, f"t{i}", None, 0)[1]["id"] for i in range(5)]
    assert ids == ["m1", "m2", "m3", "m4", "m5"]
    assert [m["text"] for m in r.snapshot()["chat"]] == ["t2", "t3", "t4"]


@pytest.mark.parametrize("text", ["", "   ", None, 5, "x" * 501])
def test_chat_rejects_bad_text(text: object) -> None:
    with pytest.raises(SoukError) as err:
        Room("r").chat_message(V, text, None, 0)
    assert err.value.code == "invalid"


def test_likes_aggregate() -> None:
    r = Room("r")
    for _ in range(10):
        r.like(1)
    r.like(None)
    assert r.likes_changed() == ("likes", {"total": 11})
    assert r.likes_changed() is None
    with pytest.raises(SoukError):
        r.like(0)
    with pytest.raises(SoukError):
        r.like(True)


def test_mute_expires_and_ban_blocks_entry() -> None:
    r = Room("r")
    r.mute(M, "v", 10, now_ms=1000)
    with pytest.raises(SoukError) as err:
        r.chat_message(V, "hi", None, 5000)
    assert err.value.code == "muted"
    assert r.chat_message(V, "hi", None, 11_001)[0] == "chat"
    r.ban(M, "v")
    with pytest.raises(SoukError) as err:
        r.enter(V)
    assert err.value.code == "banned"
    assert all(m["user"] != "v" for m in r.chat)


def test_viewers_cannot_moderate() -> None:
    r = Room("r")
    for call in (lambda: r.mute(V, "m", 5, 0), lambda: r.ban(V, "m"), lambda: r.set_state(V, "live"),
                 lambda: r.pin(V, None), lambda: r.delete_message(V, "m1")):
        with pytest.raises(SoukError) as err:
            call()
        assert err.value.code == "forbidden"


def test_token_bucket_and_strikes() -> None:
    b = TokenBucket(rate=10, burst=5)
    assert sum(b.take(0) for _ in range(10)) == 5
    assert b.take(100)  # 100 ms later one token is back
    assert not b.take(100)
    s = StrikeCounter(limit=3, window_ms=1000)
    assert [s.strike(t) for t in (0, 10, 20, 30)] == [False, False, False, True]
    assert s.strike(2000) is False


def test_user_buckets_are_shared_per_user_and_bounded() -> None:
    users = UserBuckets(rate=1, burst=3, cap=2)
    first, second = users.of("u1"), users.of("u1")  # two connections of one user
    assert first is second
    assert [first.take(0), second.take(0), first.take(0), second.take(0)] == [True] * 3 + [False]
    assert users.of("u2").take(0)  # another user has a bucket of its own
    users.of("u1")  # u1 used last: u2 is the least recently used
    users.of("u3")
    assert len(users) == 2
    assert users.of("u1") is first  # kept
    assert users.of("u2").take(0) and len(users) == 2  # forgotten: starts from a full burst


def test_deleting_a_message_respects_rank() -> None:
    r = Room("r")
    boss = Actor("boss", "Boss", "streamer")
    other_mod = Actor("m2", "Mod 2", "moderator")
    by_boss = r.chat_message(boss, "welcome", None, 0)[1]["id"]
    by_mod = r.chat_message(other_mod, "rules", None, 0)[1]["id"]
    by_viewer = r.chat_message(V, "hi", None, 0)[1]["id"]
    own = r.chat_message(M, "mine", None, 0)[1]["id"]
    for msg in (by_boss, by_mod):  # the streamer's, another moderator's: not a moderator's call
        with pytest.raises(SoukError) as err:
            r.delete_message(M, msg)
        assert err.value.code == "forbidden"
    assert r.delete_message(M, by_viewer)[0] == "message_deleted"
    assert r.delete_message(M, own)[0] == "message_deleted"
    assert r.delete_message(boss, by_mod)[0] == "message_deleted"
    assert [m["text"] for m in r.snapshot()["chat"]] == ["welcome"]
