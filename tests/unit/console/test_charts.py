"""The server-drawn charts: buckets filled in, the largest groups kept, averages not invented where absent."""

from __future__ import annotations

from gateway.console.charts import MAX_SERIES, chart


def test_sums_fill_missing_buckets_with_zero_and_fold_small_groups_into_other():
    rows = [{"bucket": 3600 * (i % 3), "group": f"m{i}", "requests": 10 - i} for i in range(MAX_SERIES + 2)]
    drawn = chart(rows, "requests", since=0, until=3 * 3600, interval=3600)
    names = [s["name"] for s in drawn["series"]]
    assert names[:MAX_SERIES] == [f"m{i}" for i in range(MAX_SERIES)]
    assert names[-1] == "other"
    assert drawn["series"][-1]["total"] == (10 - MAX_SERIES) + (10 - MAX_SERIES - 1)
    assert all(len(s["points"].split()) == 4 for s in drawn["series"])  # 0, 1 h, 2 h, 3 h
    assert drawn["top"] == 10


def test_averages_have_no_points_where_there_were_no_records():
    rows = [{"bucket": 0, "group": None, "p50_latency_ms": 5.0}, {"bucket": 7200, "group": None, "p50_latency_ms": 9.0}]
    drawn = chart(rows, "p50_latency_ms", since=0, until=3 * 3600, interval=3600, additive=False)
    (series,) = drawn["series"]
    assert series["name"] == "all"
    assert len(series["points"].split()) == 2
    assert series["total"] == 9.0
    # Buckets 0 and 2 h, not 1 h: two lone points, each drawn as a dot (a zero-length line), not one line across.
    assert [run["dot"] for run in series["runs"]] == [True, True]
    assert [len(set(run["points"].split())) for run in series["runs"]] == [1, 1]


def test_no_records_is_an_empty_chart_with_a_zero_top():
    drawn = chart([], "cost_usd", since=0, until=3600, interval=3600)
    assert drawn["empty"]
    assert drawn["top"] == 0
