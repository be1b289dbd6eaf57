"""Read `(ch, seq)` pairs out of msgpack event frames without decoding them.

Silent viewers only need to know that no event was lost: they check that `seq` grows by one
per channel. Decoding every frame of 10,000 viewers would make the generator the bottleneck,
so they look for the two keys' byte patterns instead (`\\xa2ch` + a str, `\\xa3seq` + an uint)
with `bytes.find`, which runs in C. Whenever the scan is ambiguous (the counts of `ch` and `seq`
differ, e.g. because a chat text is literally "seq"), the caller falls back to a full decode.
"""

from __future__ import annotations

_CH = b"\xa2ch"
_SEQ = b"\xa3seq"


def _read_str(data: bytes, i: int) -> tuple[str, int] | None:
    if i >= len(data):
        return None
    b = data[i]
    if 0xA0 <= b <= 0xBF:
        n, start = b & 0x1F, i + 1
    elif b == 0xD9 and i + 1 < len(data):
        n, start = data[i + 1], i + 2
    elif b == 0xDA and i + 2 < len(data):
        n, start = int.from_bytes(data[i + 1 : i + 3], "big"), i + 3
    else:
        return None
    if start + n > len(data):
        return None
    try:
        return data[start : start + n].decode("utf-8"), start + n
    except UnicodeDecodeError:
        return None


def _read_uint(data: bytes, i: int) -> int | None:
    if i >= len(data):
        return None
    b = data[i]
    if b <= 0x7F:
        return b
    size = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(b)
    if size is None or i + 1 + size > len(data):
        return None
    return int.from_bytes(data[i + 1 : i + 1 + size], "big")


def _positions(data: bytes, needle: bytes) -> list[int]:
    out = []
    i = data.find(needle)
    while i >= 0:
        out.append(i + len(needle))
        i = data.find(needle, i + 1)
    return out


def scan_seqs(data: bytes) -> list[tuple[str, int]] | None:
    """The (channel, seq) of each event in a frame, in order; None when the scan is unsure."""
    chs = _positions(data, _CH)
    seqs = _positions(data, _SEQ)
    if len(chs) != len(seqs):
        return None
    out = []
    for ci, si in zip(chs, seqs, strict=True):
        ch = _read_str(data, ci)
        seq = _read_uint(data, si)
        if ch is None or seq is None:
            return None
        out.append((ch[0], seq))
    return out
