"""Send times carried inside the events themselves, so any receiver can time a delivery.

A publisher puts `⏱<kind>:<id>:<ns>` at the start of a chat text or question; `ns` is the
action's *scheduled* time on the chosen clock. Receivers subtract it from their own clock.
Numbers are written in groups of four digits joined by `_` (`1795_6114_...`): a run of ten
digits looks like a phone number to the server's ad filter, which would refuse the message.

- `mono` (default): `time.monotonic_ns()`. CLOCK_MONOTONIC is one clock for every process of
  one host, so publisher and probes may live in different worker processes. Valid on ONE host.
- `wall`: `time.time_ns()`, for a publisher on one host and probes on another. Only as good as
  the hosts' clock sync (NTP/chrony typically keeps LAN hosts within ~1 ms; check the offset
  with `chronyc tracking` and add it to the error bars).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

CLOCKS = ("mono", "wall")
_STAMP = re.compile(r"⏱([a-z_]+):([\d_]+):([\d_]+)")


@dataclass(frozen=True)
class Clock:
    """Converts a monotonic instant to the stamping clock (identity for `mono`)."""

    kind: str = "mono"

    def __post_init__(self) -> None:
        if self.kind not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}")

    def at(self, mono_ns: int) -> int:
        if self.kind == "mono":
            return mono_ns
        return time.time_ns() - (time.monotonic_ns() - mono_ns)

    def now(self) -> int:
        return time.monotonic_ns() if self.kind == "mono" else time.time_ns()

    def since(self, stamp_ns: int, recv_mono_ns: int) -> int:
        """Latency from a stamp to a receive instant taken on the monotonic clock."""
        return self.at(recv_mono_ns) - stamp_ns


def _grouped(n: int) -> str:
    digits = str(n)
    head = len(digits) % 4 or 4
    return "_".join([digits[:head], *(digits[i : i + 4] for i in range(head, len(digits), 4))])


def stamp(kind: str, ident: int, at_ns: int, filler: str = "") -> str:
    return f"⏱{kind}:{_grouped(ident)}:{_grouped(at_ns)} {filler}".rstrip()


def read_stamp(text: object) -> tuple[str, int, int] | None:
    """(kind, id, ns) from a stamped text, None for anything else."""
    if not isinstance(text, str):
        return None
    m = _STAMP.search(text)
    if m is None:
        return None
    try:
        return m[1], int(m[2].replace("_", "")), int(m[3].replace("_", ""))
    except ValueError:
        return None
