"""The verdict: pass (0), SLO missed (1), inconclusive (2); bad configuration is 3, earlier.

Order matters. A broken invariant (oversold stock, a buyer left without an answer) is a
failure whatever else happened. Otherwise, if the generator was the bottleneck, nothing the
run measured can be trusted either way: inconclusive. An SLO with nothing measured is
inconclusive too. Only then do missed SLOs fail the run, and only a run with every SLO
measured and met passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadtest.slo import SloResult

PASS, FAIL, INCONCLUSIVE, BAD_CONFIG = 0, 1, 2, 3
STATUS = {PASS: "pass", FAIL: "fail", INCONCLUSIVE: "inconclusive", BAD_CONFIG: "bad configuration"}


@dataclass(frozen=True)
class Check:
    """A correctness invariant the scenario verified (e.g. exactly M units sold)."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Verdict:
    exit_code: int
    reasons: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return STATUS[self.exit_code]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "exit_code": self.exit_code, "reasons": self.reasons}


def decide(slos: list[SloResult], checks: list[Check], generator: list[str]) -> Verdict:
    broken = [f"check failed: {c.name} ({c.detail})" for c in checks if not c.ok]
    if broken:
        return Verdict(FAIL, broken + generator)
    if generator:
        return Verdict(INCONCLUSIVE, ["the load generator was the bottleneck", *generator])
    unmeasured = [f"nothing measured for {r.slo.text}" for r in slos if r.passed is None]
    if unmeasured:
        return Verdict(INCONCLUSIVE, unmeasured)
    missed = [f"SLO missed: {r.slo.text} (observed {r.observed:.1f})" for r in slos if r.passed is False]
    if missed:
        return Verdict(FAIL, missed)
    return Verdict(PASS, [f"SLO met: {r.slo.text} (observed {r.observed:.1f})" for r in slos])
