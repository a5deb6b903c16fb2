"""Every function that walks a request body (or an upstream answer) takes any JSON without raising.

The validator runs first on the request path, but these functions also read bodies a policy rewrote, bodies of
/v1/messages translated at the door, and answers from upstreams: they must be total. Hypothesis generates JSON
whose keys and strings lean towards the names these functions look for (messages, content, type, text...), so
that the odd shapes land where the walkers look, as the content part whose `type` was a list, which was a 500.
The validator and the /v1/messages ingress get the same JSON: they may refuse it, only as InvalidRequest.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.api.validation import validate
from gateway.context import Principal
from gateway.errors import InvalidRequest
from gateway.guardrails.json_schema import schema_from_response_format
from gateway.guardrails.text import answer_slots, has_token_arrays, joined, prompt_slots
from gateway.policy.facts import Facts, request_metadata
from gateway.similarity.worker import prompt_text
from gateway.telemetry.content import input_text, output_text
from gateway.telemetry.tokens import TokenCounter
from gateway.translate.anthropic_ingress import to_chat_request
from tests.fuzz_bodies import ENDPOINTS as FUZZ_ENDPOINTS, bodies as fuzz_bodies, mutate, valid_body

# derandomize: the same examples on every run (no flaky CI); deadline off: no test depends on the machine's speed.
FUZZ = settings(
    max_examples=200, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

NAMES = [
    "model", "messages", "role", "content", "type", "text", "name", "image_url", "url", "input_audio", "file",
    "refusal", "tool_calls", "tool_call_id", "function", "function_call", "arguments", "tools", "functions",
    "prompt", "input", "choices", "message", "metadata", "stream", "max_tokens", "response_format", "json_schema",
    "schema", "user", "system", "source", "data", "tool_use_id", "id",
]  # fmt: skip
WORDS = [
    "user", "assistant", "system", "developer", "tool", "function", "text", "image_url", "image", "input_image",
    "refusal", "input_text", "json_schema", "json_object", "tool_use", "tool_result", "chat/completions",
]  # fmt: skip
ENDPOINTS = ["chat/completions", "completions", "embeddings", "messages", "/v1/chat/completions", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(WORDS)
)
keys = st.sampled_from(NAMES) | st.text(max_size=6)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=8
)
# Request and answer shapes down to the content parts, with any JSON in any place: the odd shape lands where the
# walkers look (a part's type, a message's content, a tool call's function...).
# One strategy each (a map keeps one_of from flattening them into many branches): `maybe(x)` is x half the time.
odd = (st.lists(scalars, max_size=2) | st.dictionaries(keys, scalars, max_size=2) | json_values).map(lambda v: v)


def maybe(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(right.map(lambda v: v), odd)


part = st.fixed_dictionaries(
    {"type": maybe(st.sampled_from(WORDS))},
    optional={name: maybe(st.text(max_size=10)) for name in ("text", "image_url", "refusal", "input_audio", "file")},
)
tool_call = st.fixed_dictionaries(
    {
        "id": json_values,
        "type": json_values,
        "function": maybe(st.dictionaries(st.sampled_from(["name", "arguments"]), json_values)),
    }
)
message = st.fixed_dictionaries(
    {
        "role": maybe(st.sampled_from(WORDS)),
        "content": st.one_of(st.text(max_size=30), st.lists(part, min_size=1, max_size=3), odd),
    },
    optional={name: json_values for name in ("name", "tool_call_id", "function_call")}
    | {"tool_calls": maybe(st.lists(tool_call, max_size=2))},
)
chat_bodies = st.fixed_dictionaries(
    {"model": maybe(st.just("gpt-4o")), "messages": maybe(st.lists(maybe(message), min_size=1, max_size=3))},
    optional={name: json_values for name in ("tools", "stream", "max_tokens", "metadata", "response_format", "n")},
)
legacy_bodies = st.fixed_dictionaries(
    {"model": json_values},
    optional={
        "prompt": json_values | st.lists(st.text(max_size=10) | st.integers(min_value=-(2**63), max_value=2**63)),
        "input": json_values,
    },
)
bodies = st.one_of(chat_bodies, legacy_bodies)
answers = st.fixed_dictionaries(
    {
        "choices": maybe(
            st.lists(maybe(st.fixed_dictionaries({}, optional={"message": message, "text": json_values})), max_size=3)
        )
    }
)
# The structured mutator of the endpoint fuzz (tests/fuzz_bodies.py), driven by hypothesis: valid bodies of each
# endpoint with odd values put in one to three places.
mutated = st.builds(
    lambda endpoint, r: mutate(valid_body(endpoint, r), r), st.sampled_from(FUZZ_ENDPOINTS), st.randoms()
)


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    counter = TokenCounter(cache_dir=str(tmp_path_factory.mktemp("tiktoken")))
    counter.warm()
    return counter


def walk(counter: TokenCounter, endpoint: str, model: Any, body: Any) -> None:
    """Every walker over one body, with what each must give back."""
    assert counter.count_prompt(endpoint, model, body) >= 0
    assert counter.count_messages(model, body.get("messages") if isinstance(body, dict) else body) >= 0
    assert counter.count_text(model, body) >= 0
    for every_role in (False, True):
        slots = prompt_slots(endpoint, body, every_role=every_role)
        assert all(isinstance(slot.text, str) for slot in slots)
        assert isinstance(joined(slots), str)
    assert isinstance(has_token_arrays(body), bool)
    assert all(isinstance(slot.text, str) for slot in answer_slots(body))
    assert isinstance(input_text(endpoint, body), str)
    assert isinstance(output_text(orjson.dumps(body), None), str)
    assert len(prompt_text(endpoint, body, max_chars=100)) <= 100
    schema = schema_from_response_format(body.get("response_format") if isinstance(body, dict) else body)
    assert schema is None or isinstance(schema, dict)
    metadata = request_metadata(body, [(b"x-gateway-metadata-tier", b"gold")])
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    facts = Facts.from_request(body, endpoint, Principal(key_id="k", name="n"), 0, metadata, count_tokens=lambda: 7)
    assert isinstance(facts.model, str)
    assert isinstance(facts.stream, bool)
    assert isinstance(facts.has_tools, bool)
    assert facts.get("tokens") == 7
    for slot in prompt_slots(endpoint, body, every_role=True):
        slot.replace("[REDACTED]")  # a redaction writes back where the text was
    assert all(slot.text == "[REDACTED]" for slot in prompt_slots(endpoint, body, every_role=True))


# Each shape gets its own examples: mixed in one strategy, the deep ones were too rare to land.
SHAPES = {
    "chat bodies": chat_bodies,
    "legacy bodies": legacy_bodies,
    "answers": answers,
    "mutated bodies": mutated,
    "any json": json_values,
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_walker_takes_any_json(counter: TokenCounter, shape: str) -> None:
    @FUZZ
    @given(endpoint=st.sampled_from(ENDPOINTS), model=json_values, body=SHAPES[shape])
    def run(endpoint: str, model: Any, body: Any) -> None:
        walk(counter, endpoint, model, body)

    run()


def test_every_walker_takes_the_endpoint_fuzz_bodies(counter: TokenCounter) -> None:
    """The 10,000 bodies of the endpoint fuzz, straight into each walker (a few seconds)."""
    for endpoint, body in fuzz_bodies(seed=13, count=10_000):
        walk(counter, "chat/completions" if endpoint == "messages" else endpoint, "gpt-4", body)


@FUZZ
@given(endpoint=st.sampled_from(["chat/completions", "completions", "embeddings"]), body=bodies)
def test_the_validator_refuses_anything_only_with_a_400(endpoint: str, body: dict[str, Any]) -> None:
    error: InvalidRequest | None = None
    try:
        validate(endpoint, body)
    except InvalidRequest as exc:
        error = exc
    if error is not None:
        assert error.status_code == 400
        assert isinstance(error.param, str)
        assert error.param
        assert error.code
        assert len(error.message) < 400


turn = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=10)})
numbers = st.one_of(st.integers(-1, 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False))


@FUZZ
@given(
    body=bodies
    | st.fixed_dictionaries({"model": st.just("m"), "max_tokens": st.just(8), "messages": st.lists(maybe(message))})
)
def test_the_messages_ingress_refuses_anything_only_with_a_400(body: dict[str, Any]) -> None:
    error: InvalidRequest | None = None
    try:
        to_chat_request(body)
    except InvalidRequest as exc:
        error = exc
    if error is not None:
        assert error.status_code == 400
        assert error.param


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {"model": st.just("m"), "max_tokens": numbers, "messages": st.lists(turn, min_size=1, max_size=2)},
        optional={"temperature": numbers, "top_p": numbers, "top_k": numbers},
    )
)
def test_what_the_messages_ingress_lets_in_is_json(body: dict[str, Any]) -> None:
    """The endpoint encodes the translated body for the upstream: a number no encoder takes must be refused at the
    door (an integral 1e300 read as an int was a 500)."""
    try:
        chat = to_chat_request(body)
    except InvalidRequest:
        return  # refused at the door: fine
    assert orjson.loads(orjson.dumps(chat)) == chat
