"""The question board's rules: voting, ordering, answering, overdue flags, answer times."""

from __future__ import annotations

import pytest

from server.domain.qa import QuestionBoard, percentile
from server.errors import SoukError

T0 = 1_700_000_000_000
STREAMER = {"user": "s1", "name": "Host", "role": "streamer", "via": "room"}


def board() -> QuestionBoard:
    return QuestionBoard("r1", target_s=300)


def test_open_questions_ordered_by_votes_then_age() -> None:
    b = board()
    b.ask("q1", "u1", "Ann", "first?", T0)
    b.ask("q2", "u2", "Bob", "second?", T0 + 10)
    b.ask("q3", "u3", "Cy", "third?", T0 + 20)
    b.upvote("q3", "u1")
    b.upvote("q3", "u2")
    b.upvote("q2", "u1")
    assert [q.id for q in b.open_questions()] == ["q3", "q2", "q1"]
    b.upvote("q1", "u2")  # q1 ties q2 on votes and is older
    assert [q.id for q in b.open_questions()] == ["q3", "q1", "q2"]


def test_upvote_once_per_user_and_never_own() -> None:
    b = board()
    b.ask("q1", "u1", "Ann", "size?", T0)
    with pytest.raises(SoukError) as own:
        b.upvote("q1", "u1")
    assert own.value.code == "forbidden"
    b.upvote("q1", "u2")
    with pytest.raises(SoukError) as twice:
        b.upvote("q1", "u2")
    assert twice.value.code == "conflict"
    assert b.get("q1").votes == 1


@pytest.mark.parametrize("text", ["", "   ", 42, None, "x" * 501])
def test_ask_validates_text(text: object) -> None:
    with pytest.raises(SoukError) as err:
        board().ask("q1", "u1", "Ann", text, T0)
    assert err.value.code == "invalid"


def test_answer_first_wins_and_closes_voting() -> None:
    b = board()
    b.ask("q1", "u1", "Ann", "size?", T0)
    q = b.answer("q1", STREAMER, "M fits", T0 + 30_000)
    assert (q.status, q.answer, q.answered_by) == ("answered", "M fits", STREAMER)
    ev = q.to_event()
    assert ev["status"] == "answered" and ev["answer"] == "M fits" and ev["on_stream"] is False
    with pytest.raises(SoukError) as again:
        b.answer("q1", STREAMER, "L", T0 + 40_000)
    assert again.value.code == "conflict"
    with pytest.raises(SoukError):
        b.upvote("q1", "u2")
    assert b.open_questions() == []


def test_answer_on_stream_without_text() -> None:
    b = board()
    b.ask("q1", "u1", "Ann", "size?", T0)
    q = b.answer("q1", STREAMER, None, T0 + 1000, on_stream=True)
    assert q.on_stream and q.answer == "answered on stream"


def test_dismiss_and_unknown_question() -> None:
    b = board()
    b.ask("q1", "u1", "Ann", "buy me a car", T0)
    assert b.dismiss("q1").status == "dismissed"
    with pytest.raises(SoukError) as err:
        b.dismiss("nope")
    assert err.value.code == "not_found"
    with pytest.raises(SoukError):
        b.answer("q1", STREAMER, "no", T0)


def test_overdue_flagged_once_past_target() -> None:
    b = board()
    b.ask("q1", "u1", "Ann", "a?", T0)
    b.ask("q2", "u2", "Bob", "b?", T0 + 100_000)
    assert b.newly_overdue(T0 + 300_000) == []  # exactly at target: not late yet
    late = b.newly_overdue(T0 + 300_001)
    assert [q.id for q in late] == ["q1"]
    assert b.newly_overdue(T0 + 300_002) == []  # flagged once
    assert [q.id for q in b.newly_overdue(T0 + 500_000)] == ["q2"]


def test_stats_p50_p90_and_within_target() -> None:
    b = board()
    for i, secs in enumerate([10, 20, 30, 40, 50, 60, 70, 80, 90, 400]):
        b.ask(f"q{i}", "u1", "Ann", "?", T0)
        b.answer(f"q{i}", STREAMER, "ok", T0 + secs * 1000)
    b.ask("late", "u1", "Ann", "?", T0)
    s = b.stats(T0 + 1_000_000)
    assert s["questions_asked"] == 11 and s["questions_answered"] == 10
    assert s["answer_time_p50_ms"] == 50_000
    assert s["answer_time_p90_ms"] == 90_000
    assert s["answered_within_target"] == pytest.approx(0.9)
    assert s["overdue_open"] == 1 and s["overdue_count"] == 2


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5], 0.9) == 5
    assert percentile([1, 2, 3, 4], 0.5) == 2
    assert percentile(list(range(1, 101)), 0.9) == 90


def test_target_validated() -> None:
    with pytest.raises(SoukError):
        QuestionBoard("r", target_s=0)


def test_recently_answered_newest_answer_last_and_bounded() -> None:
    b = board()
    for i in range(25):
        b.ask(f"q{i}", "u1", "Ann", f"question {i}?", T0 + i)
    b.ask("open", "u2", "Bob", "still open?", T0 + 100)
    b.dismiss("q24")  # dismissed: neither open nor answered
    for i in reversed(range(24)):  # answered newest-asked first
        b.answer(f"q{i}", STREAMER, f"answer {i}", T0 + 1000 + (24 - i))
    recent = b.recently_answered()
    assert len(recent) == 20
    assert [q.id for q in recent] == [f"q{i}" for i in reversed(range(20))]
    assert all(q.status == "answered" for q in recent)
    assert [q.id for q in b.open_questions()] == ["open"]
