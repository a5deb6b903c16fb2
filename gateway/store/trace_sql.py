"""Reading records back: the trace filters and keyset pages that SQLite and PostgreSQL share (the time series and
usage sums over these filters are gateway/store/analytics_sql.py's). The stores only run what is built here, so
both answer the same query with the same rows.

One record is one trace (its spans inline). A page is ordered by (sort column, id) and its cursor holds the last
row's pair, so the next page starts strictly after it: rows inserted meanwhile never shift a page (no duplicate,
no gap among the rows that were there).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import orjson

from gateway.errors import InvalidRequest, error_type_values
from gateway.store.base import RECORD_COLUMNS, Record

Dialect = Literal["sqlite", "postgres"]
Sort = Literal["ts", "latency_ms", "cost_usd", "total_tokens"]
Order = Literal["desc", "asc"]
StatusClass = Literal["2xx", "3xx", "4xx", "5xx", "error"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SELECT = f"SELECT {', '.join(RECORD_COLUMNS)} FROM model_cost_logs"
# NULL cost (no price known) sorts as 0, both in ORDER BY and in the cursor's comparison.
_SORT_SQL = {
    "ts": "ts",
    "latency_ms": "latency_ms",
    "cost_usd": "coalesce(cost_usd, 0.0)",
    "total_tokens": "total_tokens",
}


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Which records to read: every filter is optional and they all must hold. Times are epoch seconds."""

    since: float | None = None
    until: float | None = None  # exclusive
    project: str | None = None
    model: str | None = None  # as the client asked (model_requested)
    served_model: str | None = None
    provider: str | None = None
    deployment: str | None = None
    status: int | None = None
    status_class: StatusClass | None = None  # "error": any status >= 400
    error_type: str | None = None  # snake_case, as records keep it (gateway/errors.py)
    error_domain: str | None = None
    key: str | None = None  # a key's id or name
    user: str | None = None
    team: str | None = None
    trace_id: str | None = None
    client_request_id: str | None = None  # the client's X-Request-ID
    min_latency_ms: float | None = None
    max_latency_ms: float | None = None
    min_cost_usd: float | None = None  # a record whose cost is unknown (NULL) matches neither bound
    max_cost_usd: float | None = None
    min_total_tokens: int | None = None
    max_total_tokens: int | None = None
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    min_completion_tokens: int | None = None
    max_completion_tokens: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # in content_input or content_output, case-insensitive (ASCII case on SQLite)
    ids: tuple[str, ...] | None = None  # only these records (similar_to); empty: none at all
    sort: Sort = "ts"
    order: Order = "desc"
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


_TEXT = (
    "project", "model", "served_model", "provider", "deployment", "error_type", "error_domain", "key", "user", "team",
    "trace_id", "client_request_id", "text",
)  # fmt: skip
_FLOATS = ("since", "until", "min_latency_ms", "max_latency_ms", "min_cost_usd", "max_cost_usd")
_INTS = (
    "status", "min_total_tokens", "max_total_tokens", "min_prompt_tokens", "max_prompt_tokens",
    "min_completion_tokens", "max_completion_tokens",
)  # fmt: skip
# Filter -> (column, operator) for the plain comparisons.
_COMPARE = {
    "since": ("ts", ">="), "until": ("ts", "<"), "project": ("project", "="), "model": ("model_requested", "="),
    "served_model": ("model_served", "="), "provider": ("provider", "="), "deployment": ("deployment", "="),
    "status": ("status", "="), "error_domain": ("error_domain", "="),
    "user": ("user_id", "="), "team": ("team", "="),
    "min_latency_ms": ("latency_ms", ">="), "max_latency_ms": ("latency_ms", "<="),
    "min_cost_usd": ("cost_usd", ">="), "max_cost_usd": ("cost_usd", "<="),  # NULL (unknown) compares to nothing
    "min_total_tokens": ("total_tokens", ">="), "max_total_tokens": ("total_tokens", "<="),
    "min_prompt_tokens": ("prompt_tokens", ">="), "max_prompt_tokens": ("prompt_tokens", "<="),
    "min_completion_tokens": ("completion_tokens", ">="), "max_completion_tokens": ("completion_tokens", "<="),
}  # fmt: skip
# status_class -> (low, high): low <= status < high. gateway/telemetry/tail.py matches live records with it too.
STATUS_RANGES = {"2xx": (200, 300), "3xx": (300, 400), "4xx": (400, 500), "5xx": (500, 600), "error": (400, 1000)}
TEXT_SEARCH_WINDOW_S = 86_400.0
QUERY_PARAMS = frozenset(
    _FLOATS + _INTS + _TEXT + ("status_class", "tag", "metadata", "sort", "order", "limit", "cursor")
)


def parse_trace_query(
    params: Mapping[str, str] | Iterable[tuple[str, str]], *, allow: Iterable[str] = ()
) -> TraceQuery:
    """A TraceQuery from query-string pairs (`tag=k:v` and `metadata=k:v` may repeat); InvalidRequest naming the
    parameter on a bad value or an unknown name (names in `allow` are the caller's and skipped here)."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    allowed = frozenset(allow)
    values: dict[str, Any] = {}
    tags: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, raw in pairs:
        if name in allowed:
            continue
        if name not in QUERY_PARAMS:
            raise InvalidRequest(f"Unknown parameter {name!r}.", param=name)
        if "\x00" in raw:  # PostgreSQL refuses NUL in text: a 400 here, not a store error
            raise InvalidRequest(f"{name} must not contain NUL characters.", param=name)
        if name in ("tag", "metadata"):
            key, sep, value = raw.partition(":")
            if not sep or not _NAME.fullmatch(key):
                raise InvalidRequest(f"{name} must be key:value, the key of letters, digits, _ . or -.", param=name)
            (tags if name == "tag" else metadata)[key] = value
        elif raw == "":
            continue
        elif name in _FLOATS:
            values[name] = _number(name, raw, float)
        elif name in _INTS or name == "limit":
            values[name] = _number(name, raw, int)
        else:
            values[name] = raw
    _choice(values, "sort", Sort)
    _choice(values, "order", Order)
    _choice(values, "status_class", StatusClass)
    now = time.time()
    for name in ("since", "until"):
        if name in values:
            values[name] = resolve_time(values[name], now)
    if "error_type" in values:  # a legacy class name (BudgetExceeded) asks for its snake_case kind
        values["error_type"] = error_type_values(values["error_type"])[0]
    if values.get("text") and "since" not in values:
        # A substring search reads every row's content: without a start, the last day only, not the whole table.
        values["since"] = now - TEXT_SEARCH_WINDOW_S
    limit = values.get("limit", DEFAULT_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}.", param="limit")
    query = TraceQuery(**values, tags=tags, metadata=metadata)
    if query.cursor is not None:
        _decode_cursor(query)  # a bad cursor fails now, with its name
    return query


def resolve_time(value: float, now: float) -> float:
    """`since` and `until`: epoch seconds, or, when negative, seconds before now (`since=-3600`: the last hour).
    No real record is from before 1970, so a negative time can mean nothing else."""
    return now + value if value < 0 else value


def _number(name: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise InvalidRequest(f"{name} must be {what}, not {raw!r}.", param=name) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidRequest(f"{name} must be a finite number.", param=name)
    if (kind is int and not -(2**63) <= value < 2**63) or (name == "status" and not 0 <= value <= 999):
        raise InvalidRequest(f"{name} is out of range.", param=name)  # the column's range, not a store error
    return value


def _choice(values: dict[str, Any], name: str, choices: Any) -> None:
    if name in values and values[name] not in get_args(choices):
        raise InvalidRequest(f"{name} must be one of {', '.join(get_args(choices))}.", param=name)


class Args:
    """Placeholders and their values: ? on SQLite, $1, $2... on PostgreSQL."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return "?" if self.dialect == "sqlite" else f"${len(self.values)}"


def where(q: TraceQuery, args: Args) -> list[str]:
    clauses = []
    for f in fields(TraceQuery):
        compare = _COMPARE.get(f.name)
        value = getattr(q, f.name)
        if compare is not None and value is not None:
            clauses.append(f"{compare[0]} {compare[1]} {args.add(value)}")
    if q.status_class is not None:
        low, high = STATUS_RANGES[q.status_class]
        clauses.append(f"status >= {low} AND status < {high}")
    if q.key is not None:
        clauses.append(f"(key_id = {args.add(q.key)} OR key_name = {args.add(q.key)})")
    if q.trace_id is not None:
        clauses.append(_trace_clause(q.trace_id, args))
    if q.client_request_id is not None:
        clauses.append(_request_id_clause(q.client_request_id, args))
    if q.error_type is not None:  # and the class names that older records kept for it
        clauses.append(f"error_type IN ({', '.join(args.add(v) for v in error_type_values(q.error_type))})")
    for column, wanted in (("tags", q.tags), ("metadata", q.metadata)):
        for key, value in wanted.items():
            if not _NAME.fullmatch(key):
                raise InvalidRequest(f"{column} key {key!r}: letters, digits, _ . or - only.", param=column)
            if args.dialect == "sqlite":
                path = '$."' + key + '"'  # quoted: a dot in the key is part of its name, not a path
                clauses.append(f"json_extract({column}, {args.add(path)}) = {args.add(value)}")
            else:
                clauses.append(f"{column} ->> {args.add(key)} = {args.add(value)}")
    if q.text:
        needle = q.text.lower()
        find = "instr" if args.dialect == "sqlite" else "strpos"
        clauses.append(
            f"({find}(lower(content_input), {args.add(needle)}) > 0"
            f" OR {find}(lower(content_output), {args.add(needle)}) > 0)"
        )
    if q.ids is not None:
        if not q.ids:
            clauses.append("1 = 0")
        elif args.dialect == "sqlite":
            clauses.append(f"id IN ({', '.join(args.add(i) for i in q.ids)})")
        else:
            clauses.append(f"id = ANY({args.add(list(q.ids))}::text[])")
    return clauses


def _trace_clause(trace_id: str, args: Args) -> str:
    """trace_id = the value, as the two indexes that hold it can answer (migration 0015): the trace index holds the
    rows of a client's trace (trace_id <> id), the id index the one record whose own id is the trace id. The
    predicate is spelled as the index's: SQLite and PostgreSQL match a partial index by its terms."""
    a, b, c = (args.add(trace_id) for _ in range(3))
    return f"((trace_id = {a} AND trace_id <> id) OR (id = {b} AND trace_id = {c}))"


def _request_id_clause(request_id: str, args: Args) -> str:
    """client_request_id = the value; its index holds only the rows that have one (migration 0015), and is used
    when the query says so (neither store infers `<> ''` from an equality with a parameter). '' asks for the rows
    without one: the index cannot serve that, the table is read."""
    if request_id == "":
        return f"client_request_id = {args.add(request_id)}"
    return f"client_request_id = {args.add(request_id)} AND client_request_id <> ''"


def build_select(q: TraceQuery, dialect: Dialect) -> tuple[str, list[Any]]:
    """The page's SELECT (limit + 1 rows: the extra one says whether there is a next page) and its arguments."""
    args = Args(dialect)
    clauses = where(q, args)
    sort = _SORT_SQL[q.sort]
    # Ids compare byte-wise on both stores (PostgreSQL's default collation may differ from SQLite's).
    ident = "id" if dialect == "sqlite" else 'id COLLATE "C"'
    if q.cursor is not None:
        value, last_id = _decode_cursor(q)
        op = "<" if q.order == "desc" else ">"
        after = f"{sort} {op} {args.add(value)}"
        clauses.append(f"({after} OR ({sort} = {args.add(value)} AND {ident} {op} {args.add(last_id)}))")
    sql = _SELECT
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    direction = "DESC" if q.order == "desc" else "ASC"
    sql += f" ORDER BY {sort} {direction}, {ident} {direction} LIMIT {args.add(q.limit + 1)}"
    return sql, args.values


def build_get(record_id: str, project: str | None, dialect: Dialect) -> tuple[str, list[Any]]:
    """One record by its id (and project): no ORDER BY, so that PostgreSQL looks it up by the id index rather than
    walk the (ts, id) index backwards until it meets it (hundreds of ms on 200,000 records)."""
    args = Args(dialect)
    sql = f"{_SELECT} WHERE id = {args.add(record_id)}"
    if project is not None:
        sql += f" AND project = {args.add(project)}"
    return sql + " LIMIT 1", args.values


def page(rows: Sequence[Record], q: TraceQuery) -> tuple[list[Record], str | None]:
    """The page's rows and the cursor of the next page (None when this is the last)."""
    if len(rows) <= q.limit:
        return list(rows), None
    kept = list(rows[: q.limit])
    return kept, encode_cursor(q, kept[-1])


def encode_cursor(q: TraceQuery, row: Record) -> str:
    value = row[q.sort] if q.sort != "cost_usd" else row["cost_usd"] or 0.0
    raw = orjson.dumps({"s": q.sort, "o": q.order, "v": value, "id": row["id"]})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(q: TraceQuery) -> tuple[Any, str]:
    assert q.cursor is not None
    try:
        raw = base64.urlsafe_b64decode(q.cursor + "=" * (-len(q.cursor) % 4))
        data = orjson.loads(raw)
        value, last_id = data["v"], data["id"]
        same = data["s"] == q.sort and data["o"] == q.order
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise InvalidRequest("cursor is not one this API gave out.", param="cursor") from None
    if not same or not isinstance(last_id, str) or not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidRequest("cursor belongs to another sort or order: start again without it.", param="cursor")
    return (int(value) if q.sort == "total_tokens" else float(value)), last_id
