"""`Range` headers as the replay files' route reads them (RFC 9110 §14)."""

from __future__ import annotations

import pytest

from server.http import byte_range


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None),
    ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)), ("bytes=-100", (900, 999)),
    ("bytes=990-5000", (990, 999)), ("bytes=-5000", (0, 999)), ("bytes=999-999", (999, 999)),
    ("bytes=1000-", False), ("bytes=1000-2000", False), ("bytes=-0", False),
    # ignored (the whole file): another unit, several ranges, nonsense, a reversed range
    ("items=0-1", None), ("bytes=0-1,5-6", None), ("bytes=abc", None), ("bytes=-", None),
    ("bytes=5-2", None), ("bytes=1e3-", None), ("bytes= 0-1x", None),
])
def test_byte_range(header: str | None, expected: object) -> None:
    assert byte_range(header, 1000) == expected


def test_an_empty_file_satisfies_no_range() -> None:
    assert byte_range("bytes=0-", 0) is False and byte_range("bytes=-1", 0) is False
    assert byte_range(None, 0) is None
