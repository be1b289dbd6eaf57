"""Sanctions made by the warn ladder hold after SIGTERM and after kill -9 of a real
`souk serve` child: every sanction, whatever op made it, is recorded before it is announced."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from client_sdk import Client, SoukError
from tests.conftest import ServerProcess, token


async def _code(coro: object) -> str:
    with pytest.raises(SoukError) as e:
        await coro  # type: ignore[misc]
    return str(e.value.code)


async def _ladder(url: str, room: str, loud: str, troll: str) -> None:
    """Two warnings mute `loud`; three remove `troll` (a ban in a room)."""
    async with Client(url, token("mod", "moderator")) as mod:
        await mod.join(room)
        steps = [(await mod.request("warn", room=room, user=loud))["action"] for _ in range(2)]
        steps += [(await mod.request("warn", room=room, user=troll))["action"] for _ in range(3)]
        assert steps == ["warn", "mute", "warn", "mute", "remove"]


async def _still_sanctioned(url: str, room: str, loud: str, troll: str) -> None:
    async with Client(url, token(loud)) as lc, Client(url, token(troll)) as tc:
        await lc.join(room)
        assert await _code(lc.chat(room, "am I back?")) == "muted"
        assert await _code(tc.join(room)) == "banned"


async def test_warn_ladder_sanctions_survive_sigterm_and_kill9(
        server_process: Callable[..., ServerProcess]) -> None:
    srv = server_process()
    await _ladder(srv.url, "rl", "loud1", "troll1")
    assert srv.terminate() == 0
    srv.start()
    await _still_sanctioned(srv.url, "rl", "loud1", "troll1")
    await _ladder(srv.url, "rl", "loud2", "troll2")
    srv.kill9()
    srv.start()
    await _still_sanctioned(srv.url, "rl", "loud1", "troll1")
    await _still_sanctioned(srv.url, "rl", "loud2", "troll2")
