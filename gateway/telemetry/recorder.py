"""The end of every request: cost, metrics, and one record on the telemetry queue — nothing here awaits."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from gateway.config.telemetry import FeaturesConfig
from gateway.context import RequestContext, Usage
from gateway.errors import BudgetExceeded, GatewayError, GuardrailBlocked, PolicyDenied, release_frames
from gateway.flags import Features
from gateway.similarity.prompt import SimilarityItem, prompt_text
from gateway.store.records import RECORD_COLUMNS, typed
from gateway.telemetry.content import ContentLogger, input_text, output_text
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.pricing import PriceTable, cost_usd
from gateway.telemetry.tokens import TokenCounter

if TYPE_CHECKING:
    from gateway.similarity.worker import SimilarityWorker
    from gateway.store.records import Record
    from gateway.telemetry.events import Events
    from gateway.telemetry.queue import TelemetryQueue

logger = logging.getLogger("gateway.telemetry")
# A record's content waiting to be rendered off the request path: (mode, prompt text, answer bytes, streamed text).
_RAW_CONTENT = "_raw_content"
# Records finished between two pauses of the event loop (to_records): a record still to be built costs tens of
# microseconds, and no background work may hold the loop for a millisecond.
_SLICE = 16


class Recorder:
    def __init__(
        self,
        metrics: Metrics,
        prices: PriceTable,
        tokens: TokenCounter,
        features: Features | None = None,
        content: ContentLogger | None = None,
        *,
        similarity: SimilarityWorker | None = None,
        events: Events | None = None,
    ) -> None:
        self.metrics = metrics
        self.prices = prices
        self.tokens = tokens
        self.features = features or Features(FeaturesConfig())
        self.content = content or ContentLogger(8192)
        self.queue: TelemetryQueue | None = None
        self.similarity = similarity  # prompt similarity, when enabled
        self.events = events  # the event log: what a policy, a guardrail or a budget refused

    def finish(self, ctx: RequestContext) -> None:
        ctx.finished_ns = time.perf_counter_ns()
        if ctx.error is not None:
            release_frames(ctx.error)
        project = ctx.principal.project
        cost_tracking, similar, mode = self.features.record_flags(project)
        if ctx.usage is not None and cost_tracking:
            # Computed once: a hit's is 0.0 already (what it saved is in its record, saved_usd), and the cache
            # filter computed a miss's when it kept the answer.
            if ctx.cost_usd is None:
                ctx.cost_usd = self.cost(ctx, ctx.usage)
        elif ctx.cost_usd:  # a miss's, computed for the cache's entry: not recorded with cost tracking off
            ctx.cost_usd = None
        self.metrics.observe(ctx)
        if ctx.error is not None and self.events is not None:
            self._event(ctx, ctx.error)
        similarity = self.similarity
        if similarity is not None and ctx.status < 400 and similar:
            text = prompt_text(ctx.endpoint, ctx.body, similarity.max_chars)
            similarity.offer(SimilarityItem(ctx.request_id, ctx.started_at, project, ctx.model, text))
        if self.queue is not None:
            # The record is built now so that the context (body and all) is freed at once: contexts kept alive
            # until the next flush made the garbage collector's work grow with the request rate. Only a request
            # whose usage must be counted waits in the queue as it is. Logged content travels as plain text (no
            # containers for the collector to walk), to be rendered off the request path.
            # _needs_count, written out: a call less per request.
            if ctx.usage is None and ctx.deployment is not None and ctx.status < 400 and ctx.upstream_start_ns:
                self.queue.put(ctx)
                return
            record = self.to_record(ctx)
            if mode != "off":
                streamed = ctx.completion_text if ctx.stream else None
                record[_RAW_CONTENT] = (mode, input_text(ctx.endpoint, ctx.body), ctx.response_body, streamed)
            self.queue.put(record)

    def _event(self, ctx: RequestContext, error: GatewayError) -> None:
        """A request a policy, a guardrail or a budget refused is a gateway event too (event_logs, the events
        webhook): who was refused, by what, never the prompt."""
        assert self.events is not None
        principal = ctx.principal
        who = {
            "request_id": ctx.request_id,
            "client_request_id": ctx.client_request_id,
            "project": principal.project,
            "key": principal.name,
        }
        if isinstance(error, PolicyDenied):
            self.events.emit("policy_denied", policy=error.policy, code=error.code, **who)
        elif isinstance(error, GuardrailBlocked):
            self.events.emit("guardrail_blocked", check=error.check, stage=error.stage, **who)
        elif isinstance(error, BudgetExceeded):
            self.events.emit("budget_exceeded", code=error.code, **who)

    def cost(self, ctx: RequestContext, usage: Usage) -> float | None:
        deployment = ctx.deployment
        if deployment is None:
            return None
        price = deployment.price or self.prices.price_for(ctx.served_model or deployment.model)
        if price is None:
            price = self.prices.price_for(deployment.model)
        return cost_usd(usage, price) if price is not None else None

    def count_usage(self, ctx: RequestContext) -> Usage:
        """Usage for an answer whose upstream sent none: counted with tiktoken, off the request path."""
        model = ctx.served_model or (ctx.deployment.model if ctx.deployment else ctx.model)
        prompt = self.tokens.count_prompt(ctx.endpoint, model, ctx.body)
        completion = self.tokens.count_text(model, "".join(ctx.completion_text or ()))
        # How exact the count was (exact encoding, approximate one, or estimate) is in gateway_token_count_fallbacks.
        return Usage(prompt_tokens=prompt, completion_tokens=completion, source="counted")

    async def to_records(self, batch: list[Record | RequestContext]) -> list[Record]:
        """The records of a batch. What waited (a context whose usage must be counted, content to render) is
        finished in a thread: the first token count loads an encoding, and redaction runs regular expressions
        over whole prompts."""
        waiting = [item for item in batch if isinstance(item, RequestContext) or _RAW_CONTENT in item]
        if not waiting:
            return batch  # type: ignore[return-value]
        contents = await asyncio.to_thread(self._finish_off_path, waiting)
        records = []
        for i, item in enumerate(batch):
            if i and not i % _SLICE:
                await asyncio.sleep(0)  # a batch is up to a thousand records: the event loop is not held for them
            try:
                record = self.to_record(item) if isinstance(item, RequestContext) else item
                record.pop(_RAW_CONTENT, None)
                if record["id"] in contents:
                    record["content_input"], record["content_output"] = contents[record["id"]]
                records.append(record)
            except Exception:  # one malformed record must not stop the others
                logger.exception("cannot build a telemetry record")
        return records

    def _finish_off_path(self, batch: list[Record | RequestContext]) -> dict[str, tuple[str, str]]:
        """Count missing usage; render logged content (by request id)."""
        contents: dict[str, tuple[str, str]] = {}
        for item in batch:
            try:
                if not isinstance(item, RequestContext):
                    mode, prompt, answer, streamed = item[_RAW_CONTENT]
                    contents[item["id"]] = self._render(mode, prompt, answer, streamed)
                    continue
                ctx = item
                project = ctx.principal.project
                ctx.usage = self.count_usage(ctx)
                if self.features.enabled("cost_tracking", project):
                    ctx.cost_usd = self.cost(ctx, ctx.usage)
                self.metrics.usage_counted.inc()
                mode = self.features.content_mode(project)
                if mode != "off":
                    streamed = ctx.completion_text if ctx.stream else None
                    prompt = input_text(ctx.endpoint, ctx.body)
                    contents[ctx.request_id] = self._render(mode, prompt, ctx.response_body, streamed)
            except Exception:  # the record goes without what could not be worked out
                logger.exception("cannot finish a telemetry record")
        return contents

    def _render(self, mode: str, prompt: str, answer: bytes | None, streamed: list[str] | None) -> tuple[str, str]:
        return self.content.render(mode, prompt), self.content.render(mode, output_text(answer, streamed))

    def to_record(self, ctx: RequestContext) -> Record:
        """The request's record, every field of its declared type (gateway/store/records.py): values that come
        from outside (the body's model, a token's claims, an upstream's answer) may be anything, and a record the
        store cannot take must never be queued. A request refused at validation keeps what it sent, as text."""
        usage = ctx.usage or Usage(source="none")
        principal = ctx.principal
        error = ctx.error
        deployment = ctx.deployment
        start = ctx.started_ns
        # The context's timings, each worked out once (total_ns, upstream_ns and overhead_ns() are computed).
        total_ns = (ctx.finished_ns or time.perf_counter_ns()) - start
        upstream_ns = ctx.upstream_ns
        # Filled in a copy of a dict holding every field already (in RECORD_COLUMNS' order): a dict display of 39
        # entries is built in chunks of 16 merged together, more than twice the cost.
        record = _EMPTY_RECORD.copy()
        record["id"] = ctx.request_id
        record["ts"] = ctx.started_at
        record["endpoint"] = ctx.endpoint
        record["key_name"] = principal.name
        record["key_id"] = principal.key_id
        record["project"] = principal.project
        record["team"] = principal.team
        record["user_id"] = principal.user
        record["model_requested"] = ctx.model
        record["model_served"] = ctx.served_model or (deployment.model if deployment else "")
        record["provider"] = ctx.provider
        record["deployment"] = f"{deployment.provider}/{deployment.model}" if deployment else ""
        record["status"] = ctx.status
        record["error_type"] = error.error_type if error else ""
        record["error_domain"] = error.domain if error else ""
        record["stream"] = ctx.stream
        record["latency_ms"] = total_ns / 1e6
        record["upstream_ms"] = upstream_ns / 1e6
        record["ttfb_ms"] = (ctx.upstream_headers_ns - start) / 1e6 if ctx.upstream_headers_ns else None
        record["ttft_ms"] = (ctx.first_token_ns - start) / 1e6 if ctx.first_token_ns else None
        record["overhead_ms"] = (total_ns - upstream_ns) / 1e6 if total_ns > upstream_ns else 0.0
        record["prompt_tokens"] = usage.prompt_tokens
        record["completion_tokens"] = usage.completion_tokens
        record["cached_tokens"] = usage.cached_tokens
        record["reasoning_tokens"] = usage.reasoning_tokens
        record["total_tokens"] = usage.total_tokens
        record["cost_usd"] = ctx.cost_usd
        record["usage_source"] = usage.source
        record["spans"] = _spans(ctx, upstream_ns)
        record["tags"] = ctx.tags
        record["attempts"] = ctx.attempts
        record["route_reason"] = ctx.route_reason
        # What each guardrail check found: types and positions, never the text.
        record["guardrails"] = ctx.guardrails or []
        record["trace_id"], record["parent_span_id"] = ctx.trace_context()  # one call, not two properties
        record["content_input"] = ""
        record["content_output"] = ""
        metadata = ctx.body.get("metadata") if ctx.metadata is None else ctx.metadata  # request_metadata()
        record["metadata"] = _metadata(metadata) if metadata else {}  # most requests send none: no call
        record["client_request_id"] = ctx.client_request_id  # the client's X-Request-ID; "id" is the gateway's
        cache = ctx.cache
        if cache is not None:  # else the empty record's values: "" and None
            record["cache"] = cache.status
            record["cache_source_id"] = cache.served_id
            record["saved_usd"] = cache.saved_usd
        return typed(record)


_EMPTY_RECORD: Record = dict.fromkeys(RECORD_COLUMNS)


def _metadata(value: Any) -> dict[str, str]:
    """The request's `metadata` as OpenAI defines it (string keys and values; at most 16 pairs kept)."""
    if not isinstance(value, dict) or not value:
        return {}
    kept = {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
    return kept if len(kept) <= 16 else dict(list(kept.items())[:16])


def _spans(ctx: RequestContext, upstream_ns: int) -> list[dict[str, Any]]:
    """The request's spans (filters, routing attempts), then the upstream call's phases: `upstream` from the request
    sent to the last byte, `upstream.first_byte` until the answer's headers, `upstream.body` from there on, and
    `upstream.connect` when a new connection was opened for it (within the first byte's wait)."""
    spans = [{"name": s.name, "start_ms": s.start_ns / 1e6, "ms": s.duration_ns / 1e6} for s in ctx.spans]
    sent = ctx.upstream_start_ns
    if sent:
        at_ms = (sent - ctx.started_ns) / 1e6
        upstream_ms = upstream_ns / 1e6
        spans.append({"name": "upstream", "start_ms": at_ms, "ms": upstream_ms})
        headers = ctx.upstream_headers_ns
        if headers:
            first_byte_ms = (headers - sent) / 1e6
            spans.append({"name": "upstream.first_byte", "start_ms": at_ms, "ms": first_byte_ms})
            body_ms = upstream_ms - first_byte_ms if upstream_ms > first_byte_ms else 0.0
            spans.append({"name": "upstream.body", "start_ms": at_ms + first_byte_ms, "ms": body_ms})
        connect = ctx.upstream_connect
        if connect is not None:
            began, ended = connect
            spans.append(
                {"name": "upstream.connect", "start_ms": (began - ctx.started_ns) / 1e6, "ms": (ended - began) / 1e6}
            )
    return spans
