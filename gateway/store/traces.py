"""The TraceStore methods, written once for both stores: each store says its SQL dialect and runs a query into
rows (`_named`: dicts by column name, JSON columns decoded); gateway/store/trace_sql.py and analytics_sql.py
build the SQL over the records, rollup_sql.py over the usage rollups where they can answer."""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.store import rollup_sql
from gateway.store.analytics_sql import (
    GroupBy,
    Kind,
    UsageBy,
    build_timeseries,
    build_usage,
    timeseries_rows,
    usage_rows,
)
from gateway.store.base import Record
from gateway.store.trace_sql import Dialect, TraceQuery, build_get, build_select, page


class TraceQueries:
    dialect: ClassVar[Dialect]

    async def _named(self, sql: str, args: list[Any]) -> list[Record]:
        raise NotImplementedError

    async def query_traces(self, q: TraceQuery) -> tuple[list[Record], str | None]:
        sql, args = build_select(q, self.dialect)
        return page(await self._named(sql, args), q)

    async def get_trace(self, record_id: str, *, project: str | None = None) -> Record | None:
        sql, args = build_get(record_id, project, self.dialect)
        rows = await self._named(sql, args)
        return rows[0] if rows else None

    async def timeseries(
        self,
        kind: Kind,
        *,
        interval_s: int,
        group_by: GroupBy = "none",
        since: float | None = None,
        until: float | None = None,
        project: str | None = None,
    ) -> list[Record]:
        rolled = rollup_sql.build_timeseries(kind, interval_s, group_by, since, until, project, self.dialect)
        if rolled is not None:
            rows = rollup_sql.timeseries_figures(kind, await self._named(*rolled))
            return timeseries_rows(kind, group_by, rows)
        sql, args = build_timeseries(kind, interval_s, group_by, since, until, project, self.dialect)
        return timeseries_rows(kind, group_by, await self._named(sql, args))

    async def usage_summary(
        self, by: UsageBy, *, since: float | None = None, until: float | None = None, project: str | None = None
    ) -> list[Record]:
        sql, args = rollup_sql.build_usage(by, since, until, project, self.dialect) or build_usage(
            by, since, until, project, self.dialect
        )
        return usage_rows(await self._named(sql, args))
