"""Prompt similarity through an embeddings deployment of the gateway itself (`similarity.embedding_model`).

The similarity worker's batches go to the model group by the router — its strategy, retries, fallbacks and
breakers — as one embeddings request per batch, outside the pipeline: no key, no limits, no record of its own
(they are the gateway's own calls, not a client's). A failure drops that batch's comparison, counted by the worker.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import orjson

from gateway.context import RequestContext
from gateway.errors import UpstreamUnavailable
from gateway.ids import new_id
from gateway.routing.router import Router
from gateway.similarity.worker import EmbedFn


def deployment_embedder(router: Router, model: str) -> EmbedFn:
    async def embed(texts: list[str]) -> npt.NDArray[np.float32]:
        body = {"model": model, "input": texts}
        ctx = RequestContext(
            request_id=new_id(),  # its trace id too (the upstream traceparent): 32 hex digits
            endpoint="embeddings",
            headers=[],
            raw_body=orjson.dumps(body),
            body=body,
        )
        reply = await router.send(ctx)
        if reply.status != 200 or reply.stream is not None:
            raise UpstreamUnavailable(f"the embeddings deployment {model!r} answered {reply.status}")
        data = orjson.loads(reply.body).get("data")
        if not isinstance(data, list) or len(data) != len(texts):
            raise UpstreamUnavailable(f"the embeddings deployment {model!r} answered no embeddings for the batch")
        ordered = sorted(data, key=lambda item: item.get("index", 0))
        return np.asarray([item["embedding"] for item in ordered], dtype=np.float32)

    return embed
