"""Gateway: the components of one running gateway, built from the config, opened in order, closed in reverse."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from gateway.cache.service import ResponseCache
from gateway.components import Components
from gateway.config import GatewayConfig, ModelGroup
from gateway.config.cache import semantic_redis_url
from gateway.context import RequestContext
from gateway.conversations import Conversations
from gateway.flags import Features, FlagStore, ProjectGate
from gateway.guardrails.build import CheckEnv, load_prompts
from gateway.identity.authenticator import Authenticator
from gateway.pipeline import build_pipeline
from gateway.policy.registry import PolicyRegistry
from gateway.providers.base import Provider, build_provider
from gateway.readiness import Readiness
from gateway.routing.health import HealthRegistry
from gateway.routing.router import Router
from gateway.server.watch import OpenRequests
from gateway.sinks.access_log import AccessLog
from gateway.sinks.base import Sink
from gateway.sinks.deadletter import DeadLetter
from gateway.sinks.exporters import build_sink
from gateway.sinks.outbox import BatchSink, Outbox
from gateway.sinks.spool import Spool
from gateway.state.base import StateBackend, open_state
from gateway.state.ratelimits import RateLimits
from gateway.store.base import Store, key_store, open_store, policy_store, response_store
from gateway.store.maintenance import StoreMaintenance
from gateway.telemetry.content import ContentLogger
from gateway.telemetry.events import EventLogSink, Events, WebhookSink, passthrough
from gateway.telemetry.gc_pauses import GcPauses
from gateway.telemetry.loop_lag import LoopLag
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.pricing import PriceTable
from gateway.telemetry.queue import TelemetryQueue
from gateway.telemetry.recorder import Recorder
from gateway.telemetry.tail import TraceTail
from gateway.telemetry.tokens import TokenCounter

if TYPE_CHECKING:
    from gateway.similarity.worker import SimilarityWorker

logger = logging.getLogger("gateway")
STORE_OPEN_TIMEOUT_S = 10.0  # connecting and migrating at start; past it the gateway serves, the store retries


class Gateway:
    def __init__(self, config: GatewayConfig, *, access_log_stream: Any = None) -> None:
        self.config = config
        self.started_at = int(time.time())
        self.draining = False
        self.open_requests = OpenRequests()  # what the shutdown cuts at the end of its drain time
        self.metrics = Metrics()
        self.gc_pauses = GcPauses(self.metrics.registry)
        self.loop_lag = LoopLag(self.metrics.registry)
        enabled = config.enabled_providers()
        for name in config.providers.keys() - enabled.keys():
            logger.warning("provider %s is optional and has no api_key: its deployments are left out", name)
        if not config.auth.admin_key and not any(key.role == "admin" for key in config.auth.keys):
            jwt = config.auth.jwt.hs256_secret or config.auth.jwt.jwks_url
            logger.warning(
                "no auth.admin_key and no config key with role admin: %s",
                "only a JWT with the admin role reaches the admin API" if jwt else "nobody can use the admin API",
            )
        self.providers: dict[str, Provider] = {name: build_provider(name, p) for name, p in enabled.items()}
        self.models: dict[str, ModelGroup] = {}
        for name, group in config.models.items():
            deployments = [d for d in group.deployments if d.provider in enabled]
            if deployments:
                self.models[name] = dataclasses.replace(group, deployments=deployments)
        self.state: StateBackend = open_state(config.state.backend)
        self.store: Store | None = open_store(config.telemetry.store, query_timeout_s=config.telemetry.query_timeout_s)
        self.maintenance = (
            StoreMaintenance(
                self.store,
                config.telemetry,
                self.metrics.registry,
                responses_retention_days=config.responses.retention_days,
            )
            if self.store is not None
            else None
        )
        prices = self._load_prices()
        tokens = self.tokens = self._token_counter()
        telemetry = config.telemetry
        self.features = Features(
            config.features,
            content_mode=telemetry.content.mode,
            sinks=telemetry.sinks,
            store=self.store if isinstance(self.store, FlagStore) else None,
        )
        # The store and each sink get an outbox of their own: one that is down or slow holds back no other, and
        # what it cannot take waits on disk.
        self.outboxes: list[Outbox] = []
        sinks: list[Sink] = []
        if self.store is not None:
            spool_mb = telemetry.store_spool_max_mb
            sinks.append(
                self._outbox(
                    self.store,
                    telemetry.queue_size,
                    telemetry.batch_size,
                    telemetry.flush_interval_ms,
                    telemetry.store_max_backoff_s,
                    spool_mb,
                    store=True,
                )
            )
        for name, sink_config in telemetry.sinks.items():
            sink = build_sink(name, sink_config)
            outbox = self._outbox(
                sink, sink_config.queue_size, sink_config.batch_size, sink_config.flush_interval_ms,
                sink_config.max_backoff_s, sink_config.spool_max_mb,
            )  # fmt: skip
            sinks.append(ProjectGate(outbox, self.features, f"sink.{name}"))
        self.tail = TraceTail()
        if sinks:  # the live tail shows what is written somewhere
            sinks.append(self.tail)
        if config.server.access_log:
            sinks.append(AccessLog(access_log_stream or sys.stdout.buffer))
        self.events, self.event_queue = self._events()
        self.health = HealthRegistry(
            (d for g in self.models.values() for d in g.deployments), config.routing, self.state, self.events
        )
        self.router = Router(
            models=self.models,
            providers=self.providers,
            config=config.routing,
            health=self.health,
            events=self.events,
            metrics=self.metrics,
            prices=prices,
            tokens=tokens,
        )
        self.similarity = self._similarity(self.router)
        self.recorder = Recorder(
            self.metrics,
            prices,
            tokens,
            self.features,
            ContentLogger(telemetry.content.max_chars),
            similarity=self.similarity,
            events=self.events,
        )
        self.queue = TelemetryQueue(
            metrics=self.metrics,
            to_records=self.recorder.to_records,
            sinks=sinks,
            maxsize=telemetry.queue_size,
            batch_size=telemetry.batch_size,
            flush_interval_s=telemetry.flush_interval_ms / 1000,
        )
        if sinks:  # with no sink, no record is built at all
            # Set after both are built: the queue turns what the recorder puts in it into records with the
            # recorder's own to_records (a request whose usage is counted off the request path).
            self.recorder.queue = self.queue
        self.policies = PolicyRegistry(
            config.policies,
            resolve=config.resolve_path,
            store=policy_store(self.store),
            registry=self.metrics.registry,
            check_env=self._check_env(tokens),
        )
        # Built whatever the pipeline: the admin endpoints authenticate with it in every auth mode.
        self.identity = Authenticator(config.auth, key_store(self.store))
        # The Responses API's stored responses (previous_response_id, GET/DELETE /v1/responses/{id}).
        self.conversations = Conversations(
            response_store(self.store) if config.responses.store else None,
            memory_max=config.responses.memory_max,
            memory_max_mb=config.responses.memory_max_mb,
            write_timeout_s=config.telemetry.write_timeout_s,
            read_timeout_s=config.telemetry.query_timeout_s,
            max_chain=config.responses.max_chain,
            registry=self.metrics.registry,
            linger_s=config.telemetry.flush_interval_ms / 1000,  # committed at the records' pace
        )
        # The counters that the ratelimit filter reserves on and /admin/usage reads: without that filter nothing
        # is counted (and no Redis client is made), and /admin/usage reports no limit.
        self.rate_limits = (
            RateLimits(
                config.limits,
                # A slot held by a process that died comes back when its lease lapses: longer than any request.
                lease_ms=int(config.routing.timeouts.total_s * 1000) + 60_000,
                registry=self.metrics.registry,
            )
            if "ratelimit" in config.pipeline
            else None
        )
        # The response cache: built only when the pipeline names its filter (no Redis client otherwise).
        self.cache = self._cache(self.router) if "cache" in config.pipeline else None
        self.components = Components(
            config=config,
            registry=self.metrics.registry,
            metrics=self.metrics,
            identity=self.identity,
            policies=self.policies,
            check_env=self.policies.check_env,
            tokens=tokens,
            recorder=self.recorder,
            events=self.events,
            features=self.features,
            models=self.models,
            router=self.router,
            rate_limits=self.rate_limits,
            cache=self.cache,
        )
        self.pipeline = build_pipeline(config.pipeline, self.components)
        self.ready = Readiness(self, self.metrics.registry)

    def _outbox(
        self,
        sink: BatchSink,
        queue_size: int,
        batch_size: int,
        flush_ms: int,
        max_backoff_s: float,
        spool_mb: float,
        *,
        store: bool = False,
    ) -> Outbox:
        """An outbox for a sink; `store`: the store's records or events, whose writes are bounded by
        telemetry.write_timeout_s and whose records wait in memory no longer than telemetry.spill_after_ms (an
        export sink's requests are bounded by its own timeout_s)."""
        telemetry = self.config.telemetry
        spool = dead_letter = None
        if telemetry.spool_dir and spool_mb > 0:
            folder = self.config.resolve_path(telemetry.spool_dir) / sink.name
            spool = Spool(folder, max_bytes=int(spool_mb * 1_048_576))
            if telemetry.dead_letter_max_mb > 0:
                dead_letter = DeadLetter(folder, sink.name, max_bytes=int(telemetry.dead_letter_max_mb * 1_048_576))
        outbox = Outbox(
            sink,
            registry=self.metrics.registry,
            queue_size=queue_size,
            batch_size=batch_size,
            flush_interval_s=flush_ms / 1000,
            max_backoff_s=max_backoff_s,
            spool=spool,
            dead_letter=dead_letter,
            write_timeout_s=telemetry.write_timeout_s if store else None,
            spill_after_s=telemetry.spill_after_ms / 1000 if store else None,
        )
        self.outboxes.append(outbox)
        return outbox

    def _events(self) -> tuple[Events, TelemetryQueue | None]:
        # Like the request records' sinks, each behind an outbox: retried, and spooled while it is down.
        sinks: list[Sink] = []
        webhook = self.config.routing.events_webhook
        telemetry = self.config.telemetry
        if self.store is not None:
            sinks.append(
                self._outbox(
                    EventLogSink(self.store),
                    10_000,
                    webhook.batch_size,
                    webhook.flush_interval_ms,
                    telemetry.store_max_backoff_s,
                    telemetry.store_spool_max_mb,
                    store=True,
                )  # fmt: skip
            )
        if webhook.url:
            sinks.append(
                self._outbox(
                    WebhookSink(webhook),
                    10_000,
                    webhook.batch_size,
                    webhook.flush_interval_ms,
                    webhook.max_backoff_s,
                    webhook.spool_max_mb,
                )  # fmt: skip
            )
        if not sinks:
            return Events(self.metrics), None
        queue = TelemetryQueue(
            metrics=self.metrics,
            to_records=passthrough,
            sinks=sinks,
            maxsize=10_000,
            batch_size=webhook.batch_size,
            flush_interval_s=webhook.flush_interval_ms / 1000,
        )
        return Events(self.metrics, queue), queue

    def _cache(self, router: Router) -> ResponseCache:
        settings = self.config.cache.semantic
        # Imported only with the cache filter: the semantic index needs numpy. It is built whenever the filter is,
        # since a policy or a flag may turn semantic mode on for a project at any time.
        from gateway.cache.semantic import build_semantic_index

        embed = None
        if settings.embedding_model:  # through an embeddings deployment of the gateway's own
            from gateway.routing.embedder import deployment_embedder

            embed = deployment_embedder(router, settings.embedding_model)
        index = build_semantic_index(
            settings,
            redis_url=semantic_redis_url(self.config),
            embed=embed,
            registry=self.metrics.registry,
        )
        return ResponseCache(self.config.cache, self.metrics, semantic=index, semantic_min_score=settings.min_score)

    def _similarity(self, router: Router) -> SimilarityWorker | None:
        settings = self.config.similarity
        if not settings.enabled or self.store is None:
            return None
        # Imported only when similarity is on: the worker needs numpy, some 15 MB of the process's memory.
        from gateway.similarity.worker import SimilarityStore, SimilarityWorker

        embed = None
        if settings.embedding_model:  # through an embeddings deployment of the gateway's own
            from gateway.routing.embedder import deployment_embedder

            embed = deployment_embedder(router, settings.embedding_model)
        return SimilarityWorker(
            store=cast(SimilarityStore, self.store),
            registry=self.metrics.registry,
            embed=embed,
            window=settings.window,
            k=settings.k,
            near_duplicate_threshold=settings.near_duplicate_threshold,
            max_projects=settings.max_projects,
            queue_size=settings.queue_size,
            max_chars=settings.max_chars,
        )

    def _check_env(self, tokens: TokenCounter) -> CheckEnv:
        """What guardrail checks share: token counting and the known abuse prompts (read once)."""
        path = self.config.resolve_path(self.config.guardrails.abuse_prompts_file)
        prompts: list[str] = []
        if path.is_file():
            prompts = load_prompts(path)
        return CheckEnv(count_tokens=lambda text: tokens.count_text("", text), abuse_prompts=prompts)

    def counts_tokens(self) -> bool:
        """Whether a request may have its prompt counted on the request path: by a rate limit or a budget (a
        virtual key's own included), a policy, a guardrail's token cap, or a group's context-window fallback."""
        if {"ratelimit", "policy", "guardrails"} & set(self.config.pipeline):
            return True
        return any(group.context_window_fallback for group in self.models.values())

    def _load_prices(self) -> PriceTable:
        path = self.config.resolve_path(self.config.telemetry.pricing_file)
        if not path.is_file():
            logger.warning("pricing file %s not found: costs are recorded as unknown", path)
            return PriceTable.empty()
        return PriceTable.load(path)

    def _token_counter(self) -> TokenCounter:
        fallbacks = self.metrics.token_fallbacks
        return TokenCounter(self.config.telemetry.tiktoken_cache_dir, on_fallback=lambda r: fallbacks.labels(r).inc())

    def idle_timeout_s(self, ctx: RequestContext) -> float:
        deployment = ctx.deployment
        timeouts = (deployment.timeouts if deployment else None) or self.config.routing.timeouts
        return timeouts.idle_s

    async def authenticate(self, ctx: RequestContext) -> None:
        """For endpoints outside the completion pipeline (models list): the same auth as the pipeline."""
        await self.pipeline.authenticate(ctx)

    async def open(self) -> None:
        self.gc_pauses.start()
        self.loop_lag.start()
        if self.counts_tokens():
            # Reading an encoding's BPE file takes a tenth to half a second: done now, in a thread, before the server
            # accepts a request, rather than by the first request that counts, on the event loop.
            names = {*self.models, *(d.model for group in self.models.values() for d in group.deployments)}
            await asyncio.to_thread(self.tokens.warm_for, names)
        for provider in self.providers.values():
            await provider.open()
        await self.state.open()
        if self.store is not None:
            try:
                # Bounded: a hung database must not keep the gateway from serving (its writes retry later).
                async with asyncio.timeout(STORE_OPEN_TIMEOUT_S):
                    await self.store.open()
            except Exception as exc:  # noqa: BLE001 - a store that is down degrades; readiness reports it
                logger.error(
                    "store %s cannot be opened, records wait in the spool: %s: %s",
                    self.config.telemetry.store, type(exc).__name__, exc,
                )  # fmt: skip
        await self.identity.open()
        await self.features.open()
        await self.policies.open()
        if self.maintenance is not None:
            self.maintenance.start()
        if self.similarity is not None:
            self.similarity.start()
        if self.cache is not None:
            self.cache.start()
        for outbox in self.outboxes:
            outbox.start()
        self.queue.start()
        if self.event_queue is not None:
            self.event_queue.start()
        self.health.start()

    async def close(self) -> None:
        self.gc_pauses.stop()
        self.loop_lag.stop()
        await self.health.close()
        await self.policies.close()
        if self.maintenance is not None:
            await self.maintenance.close()
        await self.pipeline.close()
        if self.rate_limits is not None:  # its Redis connection, and settlements still to send
            await self.rate_limits.close()
        if self.cache is not None:
            await self.cache.close()
        await self.queue.close(deadline_s=self.config.server.drain_timeout_s)
        if self.event_queue is not None:  # into the event sinks' outboxes, before those close
            await self.event_queue.close(deadline_s=min(5.0, self.config.server.drain_timeout_s))
        # What a sink could not take by now goes to its spool, to be sent after the restart.
        await asyncio.gather(*(o.close(deadline_s=min(5.0, self.config.server.drain_timeout_s)) for o in self.outboxes))
        for outbox in self.outboxes:
            closer = getattr(outbox.sink, "close", None)
            if closer is not None and outbox.sink is not self.store:
                await closer()
        await self.features.close()
        for provider in self.providers.values():
            await provider.close()
        await self.identity.close()
        await self.conversations.close(min(5.0, self.config.server.drain_timeout_s))
        if self.similarity is not None:
            await self.similarity.close(deadline_s=min(5.0, self.config.server.drain_timeout_s))
        if self.store is not None:
            await self.store.close()
        await self.state.close()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """/health/ready: whether this replica can serve, and its dependencies' states (gateway/readiness.py)."""
        return await self.ready.check()
