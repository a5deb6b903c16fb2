"""The end of every request: cost, metrics, and one record on the telemetry queue — nothing here awaits."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from gateway.context import RequestContext, Usage
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.pricing import PriceTable, cost_usd
from gateway.telemetry.similarity import SimilarityItem, prompt_text
from gateway.telemetry.tokens import TokenCounter

if TYPE_CHECKING:
    from gateway.telemetry.queue import Record, TelemetryQueue
    from gateway.telemetry.similarity import SimilarityWorker

logger = logging.getLogger("gateway.telemetry")


class Recorder:
    def __init__(self, metrics: Metrics, prices: PriceTable, tokens: TokenCounter) -> None:
        self.metrics = metrics
        self.prices = prices
        self.tokens = tokens
        self.queue: TelemetryQueue | None = None
        self.similarity: SimilarityWorker | None = None  # prompt similarity, when enabled

    def finish(self, ctx: RequestContext) -> None:
        ctx.finished_ns = time.perf_counter_ns()
        if ctx.usage is not None:
            ctx.cost_usd = self.cost(ctx, ctx.usage)
        self.metrics.observe(ctx)
        similarity = self.similarity
        if similarity is not None and ctx.status < 400:
            text = prompt_text(ctx.endpoint, ctx.body, similarity.max_chars)
            similarity.offer(SimilarityItem(ctx.request_id, ctx.started_at, ctx.principal.project, ctx.model, text))
        if self.queue is not None:
            # The record is built now so that the context (body and all) is freed at once: contexts kept alive
            # until the next flush made the garbage collector's work grow with the request rate. Only a request
            # whose usage must be counted waits in the queue as it is.
            self.queue.put(ctx if self._needs_count(ctx) else self.to_record(ctx))

    @staticmethod
    def _needs_count(ctx: RequestContext) -> bool:
        return ctx.usage is None and ctx.deployment is not None and ctx.status < 400 and bool(ctx.upstream_start_ns)

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
        """The records of a batch. Counting missing usage runs in a thread: the first count loads an encoding."""
        uncounted = [item for item in batch if isinstance(item, RequestContext)]
        if not uncounted:
            return batch  # type: ignore[return-value]
        await asyncio.to_thread(self._count_missing_usage, uncounted)
        records = []
        for item in batch:
            if not isinstance(item, RequestContext):
                records.append(item)
                continue
            try:
                records.append(self.to_record(item))
            except Exception:  # one malformed record must not stop the others
                logger.exception("cannot build the telemetry record of request %s", item.request_id)
        return records

    def _count_missing_usage(self, batch: list[RequestContext]) -> None:
        for ctx in batch:
            ctx.usage = self.count_usage(ctx)
            ctx.cost_usd = self.cost(ctx, ctx.usage)
            self.metrics.usage_counted.inc()

    def to_record(self, ctx: RequestContext) -> Record:
        usage = ctx.usage or Usage(source="none")
        principal = ctx.principal
        error = ctx.error
        deployment = ctx.deployment
        start = ctx.started_ns
        return {
            "id": ctx.request_id,
            "ts": ctx.started_at,
            "endpoint": ctx.endpoint,
            "key_name": principal.name,
            "key_id": principal.key_id,
            "project": principal.project,
            "team": principal.team,
            "user_id": principal.user,
            "model_requested": ctx.model,
            "model_served": ctx.served_model or (deployment.model if deployment else ""),
            "provider": ctx.provider,
            "deployment": f"{deployment.provider}/{deployment.model}" if deployment else "",
            "status": ctx.status,
            "error_type": error.error_type if error else "",
            "error_domain": error.domain if error else "",
            "stream": ctx.stream,
            "latency_ms": ctx.total_ns / 1e6,
            "upstream_ms": ctx.upstream_ns / 1e6,
            "ttfb_ms": (ctx.upstream_headers_ns - start) / 1e6 if ctx.upstream_headers_ns else None,
            "ttft_ms": (ctx.first_token_ns - start) / 1e6 if ctx.first_token_ns else None,
            "overhead_ms": ctx.overhead_ns() / 1e6,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "total_tokens": usage.total_tokens,
            "cost_usd": ctx.cost_usd,
            "usage_source": usage.source,
            "spans": [{"name": s.name, "start_ms": s.start_ns / 1e6, "ms": s.duration_ns / 1e6} for s in ctx.spans],
            "tags": ctx.tags,
            "attempts": ctx.attempts,
            "route_reason": ctx.route_reason,
            # What each guardrail check found: types and positions, never the text.
            "guardrails": ctx.guardrails or [],
            "trace_id": ctx.trace_id,
            "parent_span_id": ctx.parent_span_id,
        }
