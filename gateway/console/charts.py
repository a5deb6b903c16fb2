"""Time-series charts drawn on the server as SVG: points and labels are attributes and text, never styles, so the
CSP holds and no chart library runs in the browser. Each series is a polyline on a 1000 x 200 viewBox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

WIDTH, HEIGHT = 1000.0, 200.0
MAX_SERIES = 6


def chart(
    rows: list[dict[str, Any]], field: str, *, since: float, until: float, interval: int, additive: bool = True
) -> dict[str, Any]:
    """The series of `field` per group (the largest MAX_SERIES; the rest summed as "other" when the figure adds
    up), one point per bucket from `since` to `until` (missing buckets are 0)."""
    first = int(since // interval) * interval
    buckets = list(range(first, int(until) + 1, interval)) or [first]
    index = {b: i for i, b in enumerate(buckets)}
    values: dict[str, list[float]] = {}
    seen: dict[str, set[int]] = {}
    for row in rows:
        i = index.get(int(row["bucket"]))
        value = row.get(field)
        if i is None or value is None:
            continue
        name = "all" if row.get("group") is None else str(row["group"]) or "(none)"
        values.setdefault(name, [0.0] * len(buckets))[i] += float(value)
        seen.setdefault(name, set()).add(i)
    ranked = sorted(values, key=lambda g: -sum(values[g]))
    shown = {g: values[g] for g in ranked[:MAX_SERIES]}
    rest = ranked[MAX_SERIES:]
    if rest and additive:
        shown["other"] = [sum(values[g][i] for g in rest) for i in range(len(buckets))]
    top = max((v for series in shown.values() for v in series), default=0.0)
    scale = top or 1.0
    step = WIDTH / max(len(buckets) - 1, 1)
    series = []
    for n, (name, points) in enumerate(shown.items()):
        # A sum is 0 where there were no records; an average or a percentile is absent there: no point.
        drawn = [(i, v) for i, v in enumerate(points) if additive or i in seen.get(name, ())]
        xy = {i: f"{i * step:.1f},{HEIGHT - v / scale * HEIGHT:.1f}" for i, v in drawn}
        series.append(
            {
                "name": name,
                "index": n,
                "total": sum(points) if additive else max(points),
                "points": " ".join(xy.values()),
                "runs": _runs(xy),
            }
        )
    return {
        "series": series,
        "top": top,
        "empty": not values,
        "start": _label(buckets[0], interval),
        "end": _label(buckets[-1], interval),
    }


def _runs(xy: dict[int, str]) -> list[dict[str, Any]]:
    """The points as lines over consecutive buckets only: a gap (no records: no average) is not bridged, and a
    lone point is a zero-length line (`dot`), which round line caps draw as a dot."""
    runs: list[list[str]] = []
    last = None
    for i, point in xy.items():
        if last is None or i != last + 1:
            runs.append([])
        runs[-1].append(point)
        last = i
    return [{"points": " ".join(run if len(run) > 1 else run * 2), "dot": len(run) == 1} for run in runs]


def _label(ts: float, interval: int) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%d") if interval >= 86_400 else moment.strftime("%m-%d %H:%M")
