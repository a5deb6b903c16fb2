"""The bench's table: one screen that says what the gateway costs, from the result dict measure.py builds."""

from __future__ import annotations

from typing import Any


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def table(result: dict[str, Any]) -> str:
    lines = []
    p = result["params"]
    status = "VALID" if result["valid"] else "NOT VALID"
    lines.append("")
    lines.append(
        f"gateway bench {result['timestamp']}  commit {result['git']['commit']}"
        f"{' (gateway/ modified)' if result['git']['dirty'] else ''}  pipeline {result['pipeline']}  {status}"
    )
    lines.append(
        f"DURATION={p['duration_s']}s CONNS={p['conns']} LOW_CONNS={p['low_conns']}; wrk and the nginx upstream on "
        f"CPU {p['load_cpu']}, the gateway on CPU {p['gateway_cpu']}; latencies in ms"
    )
    header = (
        f"{'scenario':<24}{'target':<9}{'req/s':>9}{'p50':>9}{'p99':>9}{'non-2xx':>9}{'sock err':>9}"
        f"{'gw CPU/req':>12}{'gw CPU':>8}{'other':>7}  "
    )
    lines += ["", header, "-" * len(header)]
    labels = {
        "whole": f"whole JSON, -c{p['conns']}",
        "stream": f"SSE 20 events, -c{p['conns']}",
        "low": f"whole JSON, -c{p['low_conns']}",
    }
    for run in result["runs"]:
        cpu = run.get("gateway_cpu_us_per_request")
        util = run.get("gateway_cpu_utilisation")
        lat = run["latency_ms"]
        cpu_text = "" if cpu is None else f"{cpu:,.0f} µs"
        util_text = "" if util is None else f"{util * 100:.0f}%"
        other_text = f"{run['other_load_on_gateway_cpu'] * 100:.0f}%" if run["target"] == "gateway" else ""
        lines.append(
            f"{labels[run['scenario']]:<24}{run['target']:<9}{fmt(run['rps']):>9}{lat['p50']:>9.2f}{lat['p99']:>9.2f}"
            f"{run['non_2xx']:>9}{run['socket_errors']:>9}"
            f"{cpu_text:>12}{util_text:>8}{other_text:>7}"
            f"  {'' if run['valid'] else 'NOT VALID'}"
        )
    lines.append("")
    for scenario, label in labels.items():
        pair = {r["target"]: r for r in result["runs"] if r["scenario"] == scenario}
        if len(pair) == 2:
            d, g = pair["direct"], pair["gateway"]
            lines.append(
                f"{label:<24} gateway/direct throughput {g['rps'] / d['rps']:.3f}; "
                f"added latency p50 {g['latency_ms']['p50'] - d['latency_ms']['p50']:+.3f} ms, "
                f"p99 {g['latency_ms']['p99'] - d['latency_ms']['p99']:+.3f} ms"
            )
    ft = result.get("first_token")
    if ft:
        lines.append("")
        lines.append(
            f"first token: {ft['n']} streams one at a time, {ft['chunk_delay_ms']:g} ms between upstream events "
            "(p50, ms)"
        )
        lines.append(f"  {'target':<9}{'TTFB':>9}{'1st token':>11}{'total':>9}")
        for target in ("direct", "gateway"):
            t = ft[target]
            lines.append(
                f"  {target:<9}{fmt(t['ttfb_ms']['p50'], '.2f'):>9}{fmt(t['first_token_ms']['p50'], '.2f'):>11}"
                f"{fmt(t['total_ms']['p50'], '.2f'):>9}"
            )
        if "added_ms" in ft:
            a = ft["added_ms"]
            lines.append(f"  {'added':<9}{a['ttfb']:>+9.2f}{a['first_token']:>+11.2f}{a['total']:>+9.2f}")
    mem = result["memory"]
    lines.append("")
    lines.append(
        f"gateway memory: RSS idle {mem['idle']['rss_mb']} MB, at the end {mem['end']['rss_mb']} MB, "
        f"peak (VmHWM) {mem['end']['hwm_mb']} MB"
    )
    t = result["telemetry"]
    lines.append(
        f"telemetry: {t['sqlite_rows']} rows in SQLite for {t['requests_sent_to_gateway']}+ requests to the gateway, "
        f"dropped {t['dropped_total']:g}, sink errors {t['sink_errors_total']:g}; the gateway's own overhead "
        f"histogram: mean {fmt(t['self_reported_overhead_us_mean'])} µs/request"
    )
    if result["warnings"]:
        lines.append("")
        lines += [f"WARNING: {w}" for w in result["warnings"]]
    lines.append("")
    lines.append(f"result: {result['result_file']}")
    lines.append(f"raw outputs (wrk, configs, gateway.log): {result['run_dir']}")
    return "\n".join(lines)
