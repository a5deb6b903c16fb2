"""The errors a client can see, each rendered as OpenAI's error JSON with the status the SDK maps.

    GatewayError                      status, type, code, param, headers, domain, retryable
    ├── ClientError                   domain=client: never retried
    │   ├── InvalidRequest            400 invalid_request_error (bad JSON/UTF-8, wrong types; param names the field)
    │   ├── AuthenticationFailed      401 authentication_error, code=invalid_api_key
    │   ├── PermissionDenied          403 permission_error
    │   │   └── PolicyDenied          a policy's deny: its own status (403 by default) and code; names the policy
    │   ├── GuardrailBlocked          400 code=guardrail_blocked: a check blocked the prompt or the answer
    │   ├── NotFound                  404 invalid_request_error
    │   │   └── ModelNotFound         404 code=model_not_found
    │   ├── MethodNotAllowed          405 invalid_request_error
    │   ├── Conflict                  409 code=conflict: a change raced another (a stale expected_version)
    │   ├── RequestTimeout            408 code=request_timeout: a head or a body that stopped arriving
    │   ├── RequestTooLarge           413 invalid_request_error
    │   ├── RequestHeadersTooLarge    431 code=request_header_too_large: a head over server.max_header_bytes
    │   ├── ClientClosed              499 code=client_closed: the client left before the answer was whole (recorded,
    │   │                             never sent; nginx's status)
    │   └── RateLimited               429 rate_limit_error + Retry-After
    │       └── BudgetExceeded        429 insufficient_quota, code=budget_exceeded, x-should-retry: false
    ├── UpstreamError                 domain=provider: carries the provider
    │   ├── UpstreamTimeout           504 connect / first byte / idle / total   retryable
    │   ├── UpstreamUnavailable       502 connection error, reset, 5xx          retryable
    │   ├── UpstreamRejected          the provider's own status and message, passed through
    │   └── NoDeploymentAvailable     503 every deployment of the model is drained, open or over capacity
    ├── ServiceUnavailable            domain=gateway: 503, a component the request needs is down (the key store)
    │   └── ServerShuttingDown        503 code=server_shutting_down: still running at the end of the drain time
    └── InternalError                 domain=gateway: 500, a generic message; details only in logs

Errors are raised where they are detected and rendered in one place: `GatewayError.to_json()`.
`ConfigError` (config.py) is not a GatewayError: it never reaches a client.

`error_type` names an error in the request's record, the trace filter, the analytics' group_by and the errors
metric, in one snake_case vocabulary with the codes clients see: it is the error's code (`budget_exceeded`,
`key_revoked`, `model_not_found`), or its `kind` when it has none (`invalid_request`, `not_found`) or when the code
is not the gateway's own (a policy author's, a provider's: `policy_denied`, `upstream_rejected`). Every code the
gateway sets is a literal in its source, so the vocabulary stays closed, as a metric label must.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import orjson

Domain = Literal["client", "provider", "gateway"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    domain: ClassVar[Domain] = "gateway"
    retryable: ClassVar[bool] = False
    kind: ClassVar[str] = "gateway_error"  # the error's family: its default code, else its class name in snake_case

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            cls.kind = cls.default_code or _snake(cls.__name__)

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.param = param
        self.headers = headers or {}

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def error_type(self) -> str:
        """The record's, the trace filter's and the errors metric's name for this error (see the module's doc)."""
        return self.code or self.kind

    def to_dict(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def release_frames(exc: BaseException) -> None:
    """Drop the tracebacks of an error and of the errors it chains, once it has been answered.

    An error kept on a request's context holds its traceback, the traceback the frames it came through, and they
    the context and the request's body: a reference cycle only the garbage collector frees, which runs seldom
    (app.py raises its threshold), so bodies of many megabytes stayed alive for as long."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is old for old in seen):
            continue
        seen.append(current)
        current.__traceback__ = None
        pending += (current.__cause__, current.__context__)


class ClientError(GatewayError):
    domain = "client"
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    pass


class AuthenticationFailed(ClientError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    type = "permission_error"


class PolicyDenied(PermissionDenied):
    """A policy refused the request. The status is the policy's own (403 unless it says otherwise), so that a
    policy can answer as OpenAI would (400 for a prompt too long, 404 for a model a plan may not use)."""

    default_code = "policy_denied"

    def __init__(self, message: str, *, policy: str, status: int = 403, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.policy = policy
        self._status = status

    @property
    def status_code(self) -> int:
        return self._status

    @property
    def error_type(self) -> str:
        return self.kind  # the code is the policy author's: the record names the policy instead

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        body["error"]["type"] = _type_for_status(self._status)  # type: ignore[index]
        return body


class GuardrailBlocked(ClientError):
    """A guardrail check blocked the prompt or the answer. The message names the check and what kind of thing it
    found, never the matched text."""

    default_code = "guardrail_blocked"

    def __init__(self, message: str, *, check: str, stage: str) -> None:
        super().__init__(message)
        self.check = check
        self.stage = stage


class NotFound(ClientError):
    status = 404


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class MethodNotAllowed(ClientError):
    status = 405


class Conflict(ClientError):
    status = 409
    default_code = "conflict"


class RequestTimeout(ClientError):
    status = 408
    default_code = "request_timeout"


class RequestTooLarge(ClientError):
    status = 413
    default_code = "request_too_large"


class RequestHeadersTooLarge(ClientError):
    status = 431
    default_code = "request_header_too_large"


class ClientClosed(ClientError):
    """The client closed its connection before the answer was whole: what was running for it is cancelled. Only
    the record and the metrics see it; 499 is nginx's status for it."""

    status = 499
    default_code = "client_closed"

    def __init__(self, message: str = "The client closed the connection before the answer was complete.") -> None:
        super().__init__(message)


class RateLimited(ClientError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float | None = None, code: str | None = None) -> None:
        headers = {"retry-after": str(max(1, round(retry_after_s)))} if retry_after_s is not None else None
        super().__init__(message, code=code, headers=headers)


class BudgetExceeded(RateLimited):
    """A spend cap is reached. `insufficient_quota` is the type OpenAI gives an exhausted quota: clients that
    tell it apart from a rate limit (LangChain, LiteLLM, the SDK's own docs) stop retrying on it."""

    type = "insufficient_quota"
    default_code = "budget_exceeded"


class UpstreamError(GatewayError):
    domain = "provider"
    status = 502

    def __init__(self, message: str, *, provider: str = "", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.provider = provider


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"
    retryable = True


class UpstreamUnavailable(UpstreamError):
    status = 502
    default_code = "upstream_unavailable"
    retryable = True


class UpstreamRejected(UpstreamError):
    """The provider answered with an error: its status and message go to the client unchanged."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        provider: str = "",
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            code=code,
            param=param,
            headers={"retry-after": retry_after} if retry_after else None,
        )
        self.upstream_status = status
        self.upstream_type = error_type or _type_for_status(status)
        self.retryable = status in (408, 429, 500, 502, 503, 504)  # type: ignore[misc]

    @property
    def status_code(self) -> int:
        return self.upstream_status

    @property
    def error_type(self) -> str:
        return self.kind  # the code is the provider's, any string: not a metric label

    def to_dict(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.upstream_type, "param": self.param, "code": self.code}}


class NoDeploymentAvailable(UpstreamError):
    status = 503
    type = "service_unavailable"
    default_code = "no_healthy_deployment"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"


class ServerShuttingDown(ServiceUnavailable):
    """The gateway is shutting down and the request was still running at the end of `server.drain_timeout_s`: a
    stream ends with this error event, a whole request gets it as its answer. Retrying elsewhere is safe."""

    default_code = "server_shutting_down"

    def __init__(self, message: str = "The gateway is shutting down and could not finish this request in time; "
                 "retry it.") -> None:  # fmt: skip
        super().__init__(message)


class InternalError(GatewayError):
    def __init__(self, message: str = "The gateway failed to handle the request.") -> None:
        super().__init__(message, code="internal_error")


def error_type_values(value: str) -> tuple[str, ...]:
    """What a filter on `error_type=value` matches in stored records: the value (a legacy name, such as
    `BudgetExceeded`, becomes its kind) and the class names that records written before error types were
    snake_case kept for that kind."""
    legacy = {cls.__name__: cls.kind for cls in _subclasses(GatewayError)}
    kind = legacy.get(value, value)
    return (kind, *sorted(name for name, k in legacy.items() if k == kind))


def _subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def _type_for_status(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status < 500:
        return "invalid_request_error"
    return "api_error"
