"""Ids the shared store lacked a moment ago (cluster mode).

Why a module of its own: products, sales and offers are all adopted from the shared store
when a node meets an id it does not know; one memo of the misses keeps a client that sends
made-up ids at one query per id per second, whichever kind it names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from server.domain import fields

_T = TypeVar("_T")

ABSENT_MS = 1000  # cluster: an id the store lacked is not asked for again within this time


class AbsentIds:
    """Ids the shared store lacked a moment ago, so that a made-up id is not asked per frame."""

    def __init__(self, shared: bool, clock_ms: Callable[[], int]) -> None:
        self.shared = shared
        self.clock_ms = clock_ms
        self._absent: dict[str, int] = {}  # "kind:id" -> until when the store lacks it (ms)

    def may_ask(self, kind: str, ident: str) -> bool:
        """Cluster: ask the store for an id this node does not know, unless the store lacked
        it a moment ago (a client sending made-up ids costs one query per second, not one
        per frame)."""
        if not self.shared or not fields.ID_RE.fullmatch(ident):
            return False
        until = self._absent.get(f"{kind}:{ident}")
        return until is None or until <= self.clock_ms()

    def note(self, kind: str, ident: str, found: _T) -> _T:
        """`found` as is; None is remembered as absent for ABSENT_MS."""
        if found is None:
            if len(self._absent) >= 10_000:
                self._absent.clear()
            self._absent[f"{kind}:{ident}"] = self.clock_ms() + ABSENT_MS
        return found
