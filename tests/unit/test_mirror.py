"""Mirroring rules: one copy per linked core/normal group, idempotent, no echo."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.community import Directory
from server.domain.mirror import Mirror
from server.domain.qa import QuestionBoard
from server.errors import SoukError

T0 = 1_700_000_000_000


def setup() -> tuple[Directory, Mirror, QuestionBoard, itertools.count[int]]:
    d = Directory()
    d.create_group("core", "shop", {"tier": "core", "topic": "tea"}, T0)
    d.create_group("norm", "shop", {"tier": "normal", "topic": "tea"}, T0)
    d.create_group("welf", "shop", {"tier": "welfare", "topic": "tea"}, T0)
    d.create_group("other", "shop2", {"tier": "normal", "topic": "tea"}, T0)
    m = Mirror()
    m.link("r1", ["core", "norm", "welf"], d, "shop")
    return d, m, QuestionBoard("r1"), itertools.count(1)


def test_one_copy_per_core_and_normal_group_with_origin() -> None:
    d, m, b, n = setup()
    q = b.ask("q1", "u1", "Ann", "is it organic?", T0)
    copies = m.mirror_question(q, d, lambda: f"m{next(n)}")
    assert sorted(c.group for c in copies) == ["core", "norm"]  # welfare gets no questions
    assert len({c.id for c in copies}) == 2 and all(c.id != "q1" for c in copies)
    events = m.question_events(q)
    chans = [e.ch for e in events]
    assert chans == ["room:r1", "group:core", "group:norm"]
    for e in events[1:]:
        assert e.fields["origin"] == {"room": "r1", "question": "q1"}
        assert e.fields["name"] == "Ann" and e.fields["text"] == "is it organic?"
        assert e.fields["id"] != "q1" and e.fields["votes"] == 0
    assert "origin" not in events[0].fields


def test_mirroring_is_idempotent_by_origin() -> None:
    d, m, b, n = setup()
    q = b.ask("q1", "u1", "Ann", "?", T0)
    first = m.mirror_question(q, d, lambda: f"m{next(n)}")
    assert m.mirror_question(q, d, lambda: f"m{next(n)}") == []  # replay: nothing new
    assert len(m.copies_of("r1", "q1")) == 2
    # a group linked later gets its one copy, the others none
    d.create_group("norm2", "shop", {"tier": "normal", "topic": "tea"}, T0)
    m.link("r1", ["norm2", "core"], d, "shop")
    again = m.mirror_question(q, d, lambda: f"m{next(n)}")
    assert [c.group for c in again] == ["norm2"]
    assert {c.id for c in first}.isdisjoint({c.id for c in again})


def test_reply_resolves_only_in_its_own_group_and_skips_echo() -> None:
    d, m, b, n = setup()
    q = b.ask("q1", "u1", "Ann", "?", T0)
    copies = {c.group: c for c in m.mirror_question(q, d, lambda: f"m{next(n)}")}
    core_copy = copies["core"]
    assert m.resolve_reply("core", core_copy.id) is core_copy
    assert m.resolve_reply("norm", core_copy.id) is None  # a copy id of another group
    assert m.resolve_reply("core", "q1") is None  # the origin id is not a copy
    assert m.resolve_reply("core", None) is None
    b.answer("q1", {"name": "Bea", "group": "core", "via": "group"}, "yes", T0 + 5)
    events = m.question_events(q, skip_group="core")
    assert [e.ch for e in events] == ["room:r1", "group:norm"]
    assert all(e.fields["status"] == "answered" and e.fields["answer"] == "yes" for e in events)


def test_link_validation() -> None:
    d, m, _, _ = setup()
    with pytest.raises(SoukError) as foreign:
        m.link("r1", ["other"], d, "shop")
    assert foreign.value.code == "forbidden"
    with pytest.raises(SoukError) as missing:
        m.link("r1", ["nope"], d, "shop")
    assert missing.value.code == "not_found"
    with pytest.raises(SoukError):
        m.link("r1", "core", d, "shop")
    assert m.link("r1", ["core"], d, "shop") == []  # already linked
    assert m.notice_targets("r1", d) == ["core", "norm", "welf"]
    assert m.rooms_of("norm") == ["r1"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ask", "replay", "reply", "answer", "link"]),
            st.integers(0, 9),
            st.integers(0, 3),
        ),
        max_size=40,
    )
)
def test_invariants_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    """Whatever happens: ≤ 1 copy per (question, group), unique copy ids, no echo."""
    d = Directory()
    for i in range(4):
        d.create_group(
            f"g{i}", "shop", {"tier": ["core", "normal", "welfare", "normal"][i], "topic": "t"}, T0
        )
    m = Mirror()
    m.link("r1", ["g0", "g1", "g2"], d, "shop")
    b = QuestionBoard("r1")
    n = itertools.count(1)
    asked: list[str] = []
    for op, qi, gi in ops:
        if op == "ask":
            q = b.ask(f"q{len(asked)}", "u1", "A", "?", T0)
            asked.append(q.id)
            m.mirror_question(q, d, lambda: f"m{next(n)}")
        elif op == "link":
            m.link("r1", [f"g{gi}"], d, "shop")
        elif asked:
            q = b.get(asked[qi % len(asked)])
            if op == "replay":
                m.mirror_question(q, d, lambda: f"m{next(n)}")
            elif op == "reply":
                gid = f"g{gi}"
                copies = [c for c in m.copies_of("r1", q.id) if c.group == gid]
                copy = m.resolve_reply(gid, copies[0].id if copies else q.id)
                if copy is not None and q.status == "open":
                    b.answer(q.id, {"via": "group", "group": gid}, "yes", T0)
                    events = m.question_events(q, skip_group=gid)
                    assert f"group:{gid}" not in [e.ch for e in events]
                    assert events[0].ch == "room:r1"
            elif op == "answer" and q.status == "open":
                b.answer(q.id, {"via": "room"}, "ok", T0)
    ids = list(m.by_id)
    assert len(ids) == len(set(ids))
    for (room, qid), per_group in m.copies.items():
        assert room == "r1" and qid in asked
        assert all(d.groups[g].tier in ("core", "normal") for g in per_group)
        assert all(c.group == g and c.question == qid for g, c in per_group.items())
    assert sum(len(v) for v in m.copies.values()) == len(ids)
