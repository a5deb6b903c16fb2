"""cache: answers served again from the response cache (gateway/cache/), per project, when the project turned it
on — by a policy's `cache` action (mode, ttl_s, min_score) or by the `cache` feature flag (off | exact | semantic).

On the request: a request that asks to skip the cache (Cache-Control: no-store, x-gateway-cache: bypass) or that
is not deterministic (unless cache.deterministic_only is false) goes on as a `bypass`; otherwise its exact key is
looked up, then, in semantic mode, the semantic index; a hit answers at once, whole or replayed as a stream in the
ingress's format. A miss goes on to the upstream, and its answer (assembled from the chunks when streamed) is
kept once the request is done: never one that failed, was cut short, or is not a 200.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.cache.entry import Entry
from gateway.cache.keys import (
    CACHEABLE,
    CONTROL_HEADERS,
    Control,
    deterministic,
    exact_key,
    request_control,
    semantic_parts,
)
from gateway.cache.replay import StreamAssembler, replay, replay_chunks
from gateway.cache.service import ResponseCache
from gateway.context import CacheOutcome, RequestContext, Usage
from gateway.filters.base import LATER, Later, Stage
from gateway.memory import right_sized
from gateway.reply import Reply

if TYPE_CHECKING:
    from gateway.components import Components
    from gateway.config import ModelGroup
    from gateway.config.cache import CacheConfig
    from gateway.flags import Features


@dataclass(slots=True)
class Pending(CacheOutcome):
    """A miss (or a refresh) whose answer is to be kept: the request's outcome itself (ctx.cache, which the record
    and the answer's headers read), carrying what on_response needs. One object a miss, not an outcome and a state
    kept beside it: this runs for every request of a project whose cache is on."""

    model: str = ""
    ttl_s: float = 0.0
    semantic: tuple[str, str] | None = None
    assembler: StreamAssembler | None = None  # a streamed answer's chunks


class CacheFilter(Stage):
    name = "cache"
    after = ("auth", "ratelimit", "guardrails", "policy")
    order_note = "a hit answers only a caller the earlier stages let through, and the policy's rewrites are in its key"
    sees_chunks = True
    decides_now = True  # in memory and exact mode, a request's lookup and its miss need no await
    settles_now = True  # the answer is kept without awaiting: in memory at once, else queued for the writer

    def __init__(
        self,
        cache: ResponseCache,
        features: Features,
        config: CacheConfig,
        cost: Callable[[RequestContext, Usage], float | None],
        group: Callable[[str], ModelGroup | None],
    ) -> None:
        self.cache = cache
        self.group = group  # a hit's model group, for its metrics' model label (the router sets it on a miss)
        self.features = features
        self.config = config
        self.cost = cost  # of a served answer, at the deployment that served it: what each later hit saves
        self.deterministic_only = config.deterministic_only
        self.ttl_s = config.ttl_s
        self.results = cache.results
        # The memory backend's entries, for a lookup without a call (None for a shared backend: its lookups await).
        self.entries = cache.memory.entries if cache.memory is not None else None

    @classmethod
    def build(cls, components: Components) -> CacheFilter:
        assert components.cache is not None, "the runtime builds the cache when the pipeline names this filter"
        return cls(
            components.cache,
            components.features,
            components.config.cache,
            components.recorder.cost,
            components.router.resolve,
        )

    def decide(self, ctx: RequestContext) -> Reply | Later | None:
        """The request phase without awaiting, for the memory backend in exact mode (LATER otherwise, having done
        nothing: on_request does the whole of it). Written out (no helper calls): this runs for every request of a
        project whose cache is on, and a miss must cost next to nothing."""
        # The first matching policy's cache action, else the project's flag.
        decision = ctx.policy
        plan = decision.cache if decision is not None else None
        project = ctx.principal.project
        mode: str | bool
        if plan is not None:
            mode = plan.mode
        else:
            features = self.features  # features.value("cache", project), without the call
            mode = features.cache_modes.get(project, features.cache_mode)
        endpoint = ctx.endpoint
        if mode == "off" or endpoint not in CACHEABLE:
            return None
        entries = self.entries
        if entries is None or mode != "exact":
            return LATER
        # request_control without the call when, as for nearly every request, neither of its headers came.
        headers = ctx.headers
        control: Control = "use"
        for name, _ in headers:
            if name in CONTROL_HEADERS:
                control = request_control(headers)
                break
        body = ctx.body
        if control == "skip":
            self._bypass(ctx)
            return None
        if self.deterministic_only and endpoint != "embeddings":
            # keys.deterministic, written out: temperature 0 or a seed.
            temperature = body.get("temperature")
            zero = temperature is not None and type(temperature) is not bool and temperature == 0
            if not zero and type(body.get("seed")) is not int:
                self._bypass(ctx)
                return None
        model = ctx.model
        key = exact_key(project, endpoint, ctx.tags.get("api", ""), model, body)
        if key is None:
            self._bypass(ctx)
            return None
        if control == "use":
            if key in entries:  # else a miss, without a call (most keys of a cache that misses are new)
                entry = self.cache.get_now(project, key)
                if entry is not None:
                    return self._hit(ctx, entry, CacheOutcome("hit", key, entry.record_id, None, entry.cost_usd))
            status = "miss"
        else:
            status = "bypass"
        self.results[status].value += 1
        ttl_s = (plan.ttl_s if plan is not None else None) or self.ttl_s
        ctx.cache = Pending(status, key, "", None, None, model, ttl_s, None,
                            StreamAssembler(endpoint) if ctx.stream else None)  # fmt: skip
        return None

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        decided = self.decide(ctx)
        if type(decided) is not Later:
            return decided
        # A shared backend, or the semantic mode: lookups that await.
        decision = ctx.policy
        plan = decision.cache if decision is not None else None
        mode = plan.mode if plan is not None else self.features.value("cache", ctx.principal.project)
        endpoint = ctx.endpoint
        cache = self.cache
        control = request_control(ctx.headers)
        body = ctx.body
        if control == "skip" or (self.deterministic_only and not deterministic(endpoint, body)):
            self._bypass(ctx)
            return None
        project, model = ctx.principal.project, ctx.model
        api = ctx.tags.get("api", "")
        key = exact_key(project, endpoint, api, model, body)
        if key is None:
            self._bypass(ctx)
            return None
        semantic = semantic_parts(project, endpoint, api, model, body) if mode == "semantic" else None
        if control == "use":
            entry = await cache.get(project, model, key)
            if entry is not None:
                return self._hit(ctx, entry, CacheOutcome("hit", key, entry.record_id, None, entry.cost_usd))
            if semantic is not None:
                # A policy may raise the least score for its requests, never lower it below the index's own (the
                # score its safety set was measured at).
                min_score = cache.semantic_min_score
                if plan is not None and plan.min_score is not None and plan.min_score > min_score:
                    min_score = plan.min_score
                match = await cache.lookup_similar(project, semantic[0], semantic[1], min_score)
                if match is not None:
                    entry = await cache.get(project, model, match.key)
                    if entry is not None:
                        outcome = CacheOutcome("semantic-hit", match.key, entry.record_id, match.score, entry.cost_usd)
                        return self._hit(ctx, entry, outcome)
        status = "miss" if control == "use" else "bypass"
        cache.results[status].value += 1
        ttl_s = (plan.ttl_s if plan is not None else None) or self.ttl_s
        assembler = StreamAssembler(endpoint) if ctx.stream else None
        ctx.cache = Pending(status, key, "", None, None, model, ttl_s, semantic, assembler)
        return None

    def _bypass(self, ctx: RequestContext) -> None:
        ctx.cache = CacheOutcome("bypass")
        self.cache.count("bypass")

    def _hit(self, ctx: RequestContext, entry: Entry, outcome: CacheOutcome) -> Reply:
        ctx.cache = outcome
        ctx.usage = Usage(entry.prompt_tokens, entry.completion_tokens, 0, 0, 0, "cache")  # positional: no keywords
        ctx.cost_usd = 0.0  # a budget settles a hit at nothing
        ctx.served_model = entry.served
        ctx.group = self.group(ctx.model)
        cache = self.cache
        self.results[outcome.status].value += 1  # cache.count, written out
        cache.bytes_served.value += len(entry.body)
        if ctx.stream and ctx.endpoint != "embeddings":
            chunks = replay_chunks(ctx.endpoint, orjson.loads(entry.body), usage=ctx.client_wants_usage)
            return Reply(stream=replay(chunks))
        return Reply(body=entry.body)

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any] | None:
        pending = ctx.cache
        if type(pending) is Pending and pending.assembler is not None:
            pending.assembler.add(chunk)
        return chunk

    def settle(self, ctx: RequestContext, reply: Reply) -> None:
        pending = ctx.cache
        if type(pending) is not Pending:
            if pending is not None and pending.hit and ctx.usage is not None:
                ctx.usage.source = "cache"  # a replayed stream's usage chunk was read as an upstream's
            return
        if ctx.error is not None or reply.status != 200:
            return
        if reply.stream is not None:
            assembler = pending.assembler
            if assembler is None or not assembler.complete:
                return
            body = orjson.dumps(assembler.answer(ctx.usage))
        else:
            body = reply.body
        # Kept until it expires or is evicted: in its own length's allocation (a provider's translated answer, and
        # the assembled one, are orjson's bytes, in a buffer up to ten times their length), so that the memory
        # backend's bound on the sum of the lengths is a bound on what they hold.
        body = right_sized(body)
        usage = ctx.usage
        served = ctx.served_model or (ctx.deployment.model if ctx.deployment else "")
        if usage is not None:
            # The request's cost, computed once: the record (Recorder.finish) and a budget's settlement read it.
            cost = ctx.cost_usd
            if cost is None:
                cost = ctx.cost_usd = self.cost(ctx, usage)
            fields = (body, ctx.request_id, time.time(), ctx.principal.project, pending.model, served,
                      usage.prompt_tokens, usage.completion_tokens, cost)  # fmt: skip
        else:
            fields = (body, ctx.request_id, time.time(), ctx.principal.project, pending.model, served, 0, 0, None)
        # The Entry's fields as a plain tuple: what the memory backend keeps (no Entry made on a miss).
        self.cache.keep(pending.key, fields, pending.ttl_s, pending.semantic)
