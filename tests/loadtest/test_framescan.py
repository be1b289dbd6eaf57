"""Silent viewers read (ch, seq) from msgpack bytes without decoding; ambiguity falls back."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.crowd import SeqTracker
from loadtest.framescan import scan_seqs


def _ev(ch: str, seq: int, text: str = "hi") -> dict[str, object]:
    return {"op": "event", "ch": ch, "seq": seq, "ts": 1_700_000_000_000, "type": "chat", "text": text}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["room:demo", "user:u-1", "group:g" * 10]), st.integers(0, 2**40)),
        min_size=1, max_size=20,
    ),
    st.booleans(),
)
def test_scan_matches_decode(events: list[tuple[str, int]], batch: bool) -> None:
    if batch:
        data = msgpack.packb({"op": "batch", "items": [_ev(c, s) for c, s in events]})
        want = events
    else:
        data = msgpack.packb(_ev(*events[0]))
        want = events[:1]
    assert scan_seqs(data) == want


def test_ambiguous_text_is_refused_not_guessed() -> None:
    # a chat text that is literally "seq" adds a third `seq` key pattern: the scan gives up
    assert scan_seqs(msgpack.packb(_ev("room:r", 5, text="seq"))) is None


def test_tracker_counts_gaps_and_duplicates() -> None:
    t = SeqTracker()
    t.baseline("room:r", 10)
    for s in (11, 12, 15, 15, 16):
        t.see("room:r", s)
    assert (t.gaps, t.dups, t.last["room:r"]) == (2, 1, 16)
    # a resume reply (or a node's replay) delivers the missing ones after newer live events:
    # the holes are filled, not counted as duplicates, and the gap is gone
    t.see("room:r", 13)
    t.see("room:r", 14)
    assert (t.gaps, t.dups, t.last["room:r"]) == (0, 1, 16)
    # events past the snapshot that arrived before the join reply are kept
    early = SeqTracker()
    early.see("room:q", 21)
    early.baseline("room:q", 20)
    early.see("room:q", 22)
    assert (early.gaps, early.dups, early.last["room:q"]) == (0, 0, 22)
