"""The verdict: pass (0), SLO missed (1), inconclusive (2); bad configuration is 3, earlier.

Order matters. A broken invariant (oversold stock, a buyer left without an answer) is a
failure whatever else happened. Otherwise, if the generator was saturated for a sustained
part of the run, it did not offer the planned load: inconclusive. An SLO with nothing
measured is inconclusive too. A missed SLO fails the run, unless the generator's own worst
stall could account for the miss (then inconclusive). Only a run with every SLO measured and
met passes; a met SLO stays met despite generator hiccups, because latency counts from the
scheduled time and a late generator only ever makes the server look slower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadtest.slo import SloResult
from loadtest.watchdog import Health

PASS, FAIL, INCONCLUSIVE, BAD_CONFIG = 0, 1, 2, 3
STATUS = {PASS: "pass", FAIL: "fail", INCONCLUSIVE: "inconclusive", BAD_CONFIG: "bad configuration"}


@dataclass(frozen=True)
class Check:
    """An invariant the scenario verified (e.g. exactly M units sold).

    `hard` checks (money, answers) fail the run whatever else happened. Soft ones (no `seq`
    gap at a viewer) can be broken by a stalled generator itself, since the server rightly
    drops droppable events for a client that stops reading: they defer to generator health.
    """

    name: str
    ok: bool
    detail: str = ""
    hard: bool = True


@dataclass
class Verdict:
    exit_code: int
    reasons: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return STATUS[self.exit_code]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "exit_code": self.exit_code, "reasons": self.reasons}


def decide(slos: list[SloResult], checks: list[Check], health: Health | None = None) -> Verdict:
    health = health or Health()
    broken = [f"check failed: {c.name} ({c.detail})" for c in checks if not c.ok and c.hard]
    if broken:
        return Verdict(FAIL, broken + health.reasons)
    soft = [f"check failed: {c.name} ({c.detail})" for c in checks if not c.ok and not c.hard]
    if health.sustained:
        return Verdict(INCONCLUSIVE, ["the load generator was the bottleneck", *health.sustained, *soft])
    if soft:
        return Verdict(FAIL, soft)
    unmeasured = [f"nothing measured for {r.slo.text}" for r in slos if r.passed is None]
    if unmeasured:
        return Verdict(INCONCLUSIVE, unmeasured)
    missed = [r for r in slos if r.passed is False]
    if missed:
        texts = [f"SLO missed: {r.slo.text} (observed {r.observed:.1f})" for r in missed]
        explained = [
            r for r in missed
            if health.transient and _latency(r) and r.observed - health.max_delay_ms <= r.slo.threshold
        ]
        if explained:
            return Verdict(INCONCLUSIVE, [
                f"generator stalls (up to {health.max_delay_ms:.0f} ms) could explain the miss",
                *texts, *health.transient,
            ])
        return Verdict(FAIL, texts)
    return Verdict(PASS, [f"SLO met: {r.slo.text} (observed {r.observed:.1f})" for r in slos])


def _latency(r: SloResult) -> bool:
    return r.slo.stat.startswith("p") or r.slo.stat in ("min", "mean", "max")
