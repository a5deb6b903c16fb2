"""An operator's reset or drain when the state backend that shares it is away (Redis refused, or hung: it accepts
and never answers): done on this replica, and a 503 that says it was not shared, within the backend's timeout."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from gateway.api.admin import act_on_deployment
from gateway.config import BreakerConfig, Deployment, RoutingConfig
from gateway.errors import ServiceUnavailable
from gateway.routing.health import HealthRegistry
from gateway.state.redis import RedisState
from gateway.telemetry.events import Events
from gateway.telemetry.metrics import Metrics
from tests.services import free_port

DEPLOYMENT = Deployment(provider="up", model="m")


@pytest.fixture(params=["refused", "hung"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "refused":
        yield f"redis://:pw-never-shown@127.0.0.1:{free_port()}/0"
        return
    with socket.socket() as hung:  # the kernel completes the handshake; nobody ever reads
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        yield f"redis://:pw-never-shown@127.0.0.1:{hung.getsockname()[1]}/0"


@pytest.mark.anyio
@pytest.mark.parametrize("action", ["reset", "drain", "undrain"])
async def test_an_action_the_state_backend_cannot_share_is_a_503_that_says_so(redis_url: str, action: str) -> None:
    state = RedisState(redis_url)
    config = RoutingConfig(breaker=BreakerConfig(consecutive_failures=1))
    health = HealthRegistry([DEPLOYMENT], config, state, Events(Metrics()))
    dep = health.get(DEPLOYMENT)
    health.failed(dep, "upstream_unavailable")
    assert dep.breaker.state == "open"
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable) as err:
            await act_on_deployment(SimpleNamespace(health=health), DEPLOYMENT.id, action)  # type: ignore[arg-type]
    finally:
        await state.close()
    assert time.monotonic() - started < 30  # the backend's own timeout (1 s); generous for a busy machine
    message = str(err.value)
    assert f"{action} done on this replica only" in message
    assert "pw-never-shown" not in message
    if action == "reset":
        assert dep.breaker.state == "closed"  # here, at least
    else:
        assert dep.drained is (action == "drain")
