"""Stamps carried in chat/question texts: round trip, and no digit run an ad filter would refuse."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from loadtest.stamps import Clock, read_stamp, stamp


@given(st.sampled_from(["event", "mirror", "question"]), st.integers(0, 10**7), st.integers(0, 2**63))
def test_round_trip_and_no_long_digit_runs(kind: str, ident: int, at: int) -> None:
    text = stamp(kind, ident, at, "load test")
    assert read_stamp(text) == (kind, ident, at)
    assert read_stamp(f"[mirrored] {text}") == (kind, ident, at)  # found anywhere in the text
    assert not re.search(r"\d{5}", text)


def test_not_a_stamp() -> None:
    assert read_stamp("hello") is None
    assert read_stamp(None) is None
    assert read_stamp("⏱event:_:_") is None


def test_clocks() -> None:
    mono = Clock("mono")
    assert mono.since(mono.at(1_000), 3_000) == 2_000
    wall = Clock("wall")
    assert abs(wall.since(wall.at(1_000), 3_000) - 2_000) < 5_000_000  # a few ms of clock reads
