"""`--report DIR`: `report.json` (everything, HDR histograms encoded) and `report.html`.

report.html is one self-contained file: the verdict, a summary table, and for each latency
metric its latency over time and its percentile plot as inline SVG (see `charts`). No CDN,
no JavaScript, so it can be attached to an issue or opened offline years later.
"""

from __future__ import annotations

import math
import platform
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from loadtest.charts import latency_over_time, percentile_plot
from loadtest.metrics import Metrics, Summary

if TYPE_CHECKING:
    from loadtest.run import Result

PLOT_PERCENTILES = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999)


def _num(v: float) -> float | str | None:
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf"
    return round(v, 3)


def summary_dict(s: Summary) -> dict[str, Any]:
    return {
        "count": s.count,
        "errors": s.errors,
        "timeouts": s.timeouts,
        "failure_rate_pct": round(s.failure_rate, 4),
        "min_ms": _num(s.min_ms),
        "mean_ms": _num(s.mean_ms),
        "p50_ms": _num(s.percentiles_ms[50.0]),
        "p90_ms": _num(s.percentiles_ms[90.0]),
        "p99_ms": _num(s.percentiles_ms[99.0]),
        "p99.9_ms": _num(s.percentiles_ms[99.9]),
        "max_ms": _num(s.max_ms),
        "p99_with_failures_ms": _num(s.p(99.0)),
    }


def result_dict(result: Result) -> dict[str, Any]:
    m = result.metrics
    cfg = result.config
    return {
        "scenario": result.scenario.name,
        "verdict": result.verdict.as_dict(),
        "config": {
            "url": cfg.url, "urls": cfg.urls or [cfg.url], "room": cfg.room, "viewers": cfg.viewers, "rate": cfg.rate,
            "duration_s": cfg.duration_s, "probes": cfg.probes, "workers": cfg.workers,
            "profile": cfg.profile, "clock": cfg.clock, "extra": cfg.extra, "run_id": cfg.run_id,
            "secret": "***" if cfg.secret else None,
        },
        "started_at": result.started_at,
        "wall_s": round(result.wall_s, 3),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "node": platform.node()},
        "slos": [r.as_dict() for r in result.slo_results],
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in result.checks],
        "generator": {"reasons": result.generator.reasons, "sustained": result.generator.sustained,
                      "max_delay_ms": round(result.generator.max_delay_ms, 3),
                      "cpu_pct_per_second": result.cpu},
        "notes": result.notes,
        "server": result.server,
        "summary": {name: summary_dict(m.summary(name)) for name in m.names},
        "errors_by_code": {k: dict(v) for k, v in m.errors.items()},
        "counters": dict(m.counters),
        "series": {name: m.per_second(name) for name in m.names},
        "metrics": m.to_dict(),
    }




def _clean(o: Any) -> Any:
    """NaN/inf are not JSON: NaN -> null, inf -> "inf"."""
    if isinstance(o, float):
        return _num(o)
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def write_report(result: Result, directory: str | Path) -> tuple[Path, Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = _clean(result_dict(result))
    json_path = d / "report.json"
    json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    html_path = d / "report.html"
    html_path.write_text(render_html(data, Metrics.from_dict(data["metrics"])), encoding="utf-8")
    return json_path, html_path


def load_report(path: str | Path) -> tuple[dict[str, Any], Metrics]:
    """Read a report.json back; the metrics (histograms included) are fully restored."""
    data = orjson.loads(Path(path).read_bytes())
    return data, Metrics.from_dict(data["metrics"])


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.verdict{font-size:20px;padding:10px 14px;border-radius:6px;display:inline-block;color:#fff}
.pass{background:#2a8a3a}.fail{background:#c0392b}.inconclusive{background:#b7950b}
.bad{color:#c0392b}.ok{color:#2a8a3a}figure{margin:8px 0 20px}
"""


def render_html(data: dict[str, Any], metrics: Metrics) -> str:
    v = data["verdict"]
    cls = {"pass": "pass", "fail": "fail"}.get(v["status"], "inconclusive")
    slo_by_metric: dict[str, float] = {}
    for s in data["slos"]:
        if str(s["stat"]).startswith("p") or s["stat"] == "max":
            slo_by_metric.setdefault(s["metric"], float(s["threshold"]))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Souk load test: {escape(data['scenario'])} — {escape(v['status'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Souk load test: <code>{escape(data['scenario'])}</code></h1>",
        f"<div class='verdict {cls}'>{escape(v['status'].upper())} (exit {v['exit_code']})</div>",
        "<ul>" + "".join(f"<li>{escape(r)}</li>" for r in v["reasons"]) + "</ul>",
        "<h2>Configuration</h2><table>"
        + "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(val))}</td></tr>"
                  for k, val in data["config"].items())
        + f"<tr><td>wall time</td><td>{data['wall_s']} s</td></tr></table>",
        "<h2>SLOs</h2><table><tr><th>SLO</th><th>observed</th><th>result</th></tr>",
    ]
    for s in data["slos"]:
        res = {True: "<span class='ok'>met</span>", False: "<span class='bad'>missed</span>",
               None: "not measured"}[s["passed"]]
        parts.append(f"<tr><td>{escape(s['slo'])}</td><td>{escape(str(s['observed']))}</td><td>{res}</td></tr>")
    parts.append("</table>")
    if data["checks"]:
        parts.append("<h2>Correctness checks</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>")
        for c in data["checks"]:
            res = "<span class='ok'>ok</span>" if c["ok"] else "<span class='bad'>FAILED</span>"
            parts.append(f"<tr><td>{escape(c['name'])}</td><td>{res}</td><td>{escape(c['detail'])}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Latency summary (ms)</h2><table><tr><th>metric</th><th>count</th><th>errors</th>"
                 "<th>timeouts</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th>"
                 "<th>p99 incl. failures</th></tr>")
    for name, s in data["summary"].items():
        cells = [s["count"], s["errors"], s["timeouts"], s["p50_ms"], s["p90_ms"], s["p99_ms"],
                 s["p99.9_ms"], s["max_ms"], s["p99_with_failures_ms"]]
        parts.append(f"<tr><td>{escape(name)}</td>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    if data["errors_by_code"]:
        parts.append("<h2>Errors by code</h2><table><tr><th>metric</th><th>code</th><th>count</th></tr>")
        for name, codes in data["errors_by_code"].items():
            for code, n in codes.items():
                parts.append(f"<tr><td>{escape(name)}</td><td>{escape(code)}</td><td>{n}</td></tr>")
        parts.append("</table>")
    if data["counters"]:
        parts.append("<h2>Counters</h2><table>" + "".join(
            f"<tr><td>{escape(k)}</td><td>{n}</td></tr>" for k, n in data["counters"].items()) + "</table>")
    gen = data["generator"]
    parts.append("<h2>Load generator health</h2><ul>"
                 + ("".join(f"<li class='bad'>{escape(r)}</li>" for r in gen["reasons"]) or "<li>kept up</li>")
                 + "".join(f"<li>{escape(label)}: CPU max {max(c) if c else 0:.0f}% (of one core)</li>"
                           for label, c in gen["cpu_pct_per_second"].items())
                 + "</ul>")
    srv = data.get("server") or {}
    if srv.get("generator_rss_mb"):
        parts.append("<p>generator peak RSS: " + ", ".join(
            f"{escape(k)} {v} MiB" for k, v in srv["generator_rss_mb"].items()) + "</p>")
    if srv.get("cpu_pct_per_second"):
        cpu = srv["cpu_pct_per_second"]
        parts.append(f"<h2>Server process</h2><ul><li>pid {srv['pid']}: CPU mean {sum(cpu) / len(cpu):.0f}%, "
                     f"max {max(cpu):.0f}% (of one core); RSS max {max(srv['rss_mb']):.0f} MiB</li></ul>")
    if data["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in data["notes"]) + "</ul>")
    parts.append("<h2>Latency over time and percentiles</h2>")
    for name in metrics.names:
        h = metrics.histograms[name]
        if not h.get_total_count():
            continue
        slo = slo_by_metric.get(name)
        series = metrics.per_second(name)
        points = [(p, h.get_value_at_percentile(p) / 1000.0) for p in PLOT_PERCENTILES]
        parts.append(f"<h3>{escape(name)}</h3><figure>{latency_over_time(f'{name}: latency over time', series, slo)}"
                     f"</figure><figure>{percentile_plot(f'{name}: percentiles', points, slo)}</figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
