"""Inline SVG charts for the HTML report: generated here, no CDN, no JavaScript.

Two kinds: latency over time (per-second p50/p99/max lines, failures as red ticks) and a
percentile plot (latency against 1/(1-p) on a log axis, the classic HDR view in which p99,
p99.9 and p99.99 are equally spaced).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H = 640, 240
PAD_L, PAD_R, PAD_T, PAD_B = 56, 16, 16, 36
COLORS = {"p50": "#2b7bb9", "p99": "#e08a00", "max": "#999999"}


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def _frame(title: str, body: list[str], x_label: str, y_label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">'
        f'<title>{escape(title)}</title>'
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>'
        + "".join(body)
        + f'<text x="{W / 2:.0f}" y="{H - 4}" font-size="11" text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="12" y="{H / 2:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {H / 2:.0f})">{escape(y_label)}</text></svg>'
    )


def _axes(ymax: float, xticks: Sequence[tuple[float, str]]) -> list[str]:
    out = [
        f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#333"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#333"/>',
    ]
    for i in range(5):
        v = ymax * i / 4
        y = H - PAD_B - (H - PAD_T - PAD_B) * i / 4
        out.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{_fmt(v)}</text>')
    for x, label in xticks:
        out.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}" font-size="10" text-anchor="middle">{escape(label)}</text>')
    return out


def _nice_max(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite) if finite else 1.0
    if top <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(top))
    for step in (1, 2, 2.5, 5, 10):
        if top <= step * mag:
            return float(step * mag)
    return float(10 * mag)


def latency_over_time(title: str, series: Sequence[dict[str, float]], slo_ms: float | None = None) -> str:
    """Per-second p50/p99/max of one metric; failures per second as red marks on the axis."""
    if not series:
        return _frame(title, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no samples</text>'], "s", "ms")
    t_max = max(p["t"] for p in series) + 1.0
    vals = [p[k] for p in series for k in ("p50", "p99", "max")]
    ymax = _nice_max([*vals, slo_ms or 0.0])

    def x(t: float) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * t / t_max

    def y(v: float) -> float:
        return H - PAD_B - (H - PAD_T - PAD_B) * min(v, ymax) / ymax

    fmt = "{:.0f}" if t_max >= 20 else "{:.1f}"
    ticks = [(x(t_max * i / 4), fmt.format(t_max * i / 4)) for i in range(5)]
    body = _axes(ymax, ticks)
    for key, color in COLORS.items():
        pts = [f"{x(p['t'] + 0.5):.1f},{y(p[key]):.1f}" for p in series if math.isfinite(p[key])]
        if pts:
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(pts)}"/>')
    for p in series:
        if p["failures"]:
            body.append(f'<rect x="{x(p["t"]):.1f}" y="{H - PAD_B - 6}" width="3" height="6" fill="#d00">'
                        f'<title>{int(p["failures"])} failures</title></rect>')
    if slo_ms is not None:
        body.append(f'<line x1="{PAD_L}" y1="{y(slo_ms):.1f}" x2="{W - PAD_R}" y2="{y(slo_ms):.1f}" '
                    f'stroke="#d00" stroke-dasharray="4 3"/>')
    legend = " ".join(f'<tspan fill="{c}">■ {k}</tspan>' for k, c in COLORS.items())
    body.append(f'<text x="{W - PAD_R}" y="{PAD_T + 10}" font-size="11" text-anchor="end">{legend}</text>')
    return _frame(title, body, "seconds since start", "latency (ms)")


def percentile_plot(title: str, points: Sequence[tuple[float, float]], slo_ms: float | None = None) -> str:
    """Latency (ms) against percentile, x = log10(1/(1-p)): 90, 99, 99.9 equally spaced."""
    pts = [(p, v) for p, v in points if p < 100.0 and math.isfinite(v)]
    if not pts:
        return _frame(title, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no samples</text>'], "percentile", "ms")
    xs = [math.log10(1.0 / (1.0 - p / 100.0)) for p, _ in pts]
    x_max = max(max(xs), 3.0)
    ymax = _nice_max([v for _, v in pts] + [slo_ms or 0.0])

    def x(xv: float) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * xv / x_max

    def y(v: float) -> float:
        return H - PAD_B - (H - PAD_T - PAD_B) * min(v, ymax) / ymax

    ticks = [(x(float(i)), label) for i, label in enumerate(("0", "90", "99", "99.9", "99.99", "99.999"))
             if i <= x_max]
    body = _axes(ymax, ticks)
    line = " ".join(f"{x(xv):.1f},{y(v):.1f}" for xv, (_, v) in zip(xs, pts, strict=True))
    body.append(f'<polyline fill="none" stroke="#2b7bb9" stroke-width="1.5" points="{line}"/>')
    if slo_ms is not None:
        body.append(f'<line x1="{PAD_L}" y1="{y(slo_ms):.1f}" x2="{W - PAD_R}" y2="{y(slo_ms):.1f}" '
                    f'stroke="#d00" stroke-dasharray="4 3"/>')
    return _frame(title, body, "percentile", "latency (ms)")
