from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.guardrails import json_schema
from gateway.guardrails.json_schema import JsonSchemaCheck, schema_from_response_format, validator_for

ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
                "required": ["name", "price"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["customer", "items"],
    "additionalProperties": False,
}


def test_valid_answer_passes() -> None:
    result = JsonSchemaCheck(ORDER).check('{"customer": "Ada", "items": [{"name": "tea", "price": 2.5}]}')
    assert (result.triggered, result.score, result.findings, result.message) == (False, 0.0, [], "")


def test_answer_that_is_not_json() -> None:
    text = 'Sure! Here is the JSON: {"customer": "Ada"}'
    result = JsonSchemaCheck(ORDER).check(text)
    assert result.triggered
    assert result.check == "json_schema"
    [finding] = result.findings
    assert (finding.type, finding.start, finding.end) == ("json_schema.parse", 0, len(text))
    assert result.message.startswith("the answer is not valid JSON: ")


def test_invalid_answer_names_paths() -> None:
    text = '{"customer": "Ada", "items": [{"name": "tea", "price": "abc"}]}'
    result = JsonSchemaCheck(ORDER).check(text)
    assert result.triggered
    [finding] = result.findings
    assert (finding.type, finding.start, finding.end) == ("json_schema.invalid", 0, len(text))
    assert result.message == "$.items[0].price: fails 'type'"  # no value of the answer: records keep this
    assert JsonSchemaCheck(ORDER).retry_hint(text) == "$.items[0].price: 'abc' is not of type 'number'"


def test_at_most_three_errors_in_document_order() -> None:
    items = [{"name": "x", "price": "bad"} for _ in range(12)]
    answer = {"items": items, "extra": 1}
    result = JsonSchemaCheck(ORDER).check(orjson.dumps(answer).decode())
    parts = result.message.split("; ")
    assert len(parts) == 3
    assert parts[0].startswith("$: ")  # the root's errors first: "customer" is required, "extra" not allowed
    assert parts[2].startswith("$.items[0].price: ")
    assert result.message.endswith("(and 11 more)")


def test_long_values_are_cut_in_the_message() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "number"}}}
    hint = JsonSchemaCheck(schema).retry_hint('{"a": "' + "x" * 1000 + '"}')
    assert len(hint) < 250
    assert hint.endswith("...")


def test_formats_are_checked() -> None:
    answer = '{"customer": "Ada", "email": "not-an-email", "items": []}'
    assert JsonSchemaCheck(ORDER).check(answer).message == "$.email: fails 'format'"
    assert JsonSchemaCheck(ORDER).retry_hint(answer) == "$.email: 'not-an-email' is not a 'email'"


def test_answer_may_be_any_json_value() -> None:
    check = JsonSchemaCheck({"type": "array", "items": {"type": "integer"}})
    assert not check.check("[1, 2, 3]").triggered
    assert check.retry_hint("[1, 2.5]") == "$[1]: 2.5 is not of type 'integer'"


def test_validators_are_cached_by_content() -> None:
    a = {"type": "object", "properties": {"x": {"type": "string"}}}
    b = {"properties": {"x": {"type": "string"}}, "type": "object"}  # same schema, other key order
    assert validator_for(a) is validator_for(b)
    assert validator_for(a) is not validator_for({"type": "string"})


def test_cache_evicts_least_recently_used() -> None:
    cache = json_schema._ValidatorCache(2)
    one, two, three = ({"const": n} for n in (1, 2, 3))
    v1 = cache.get(one)
    cache.get(two)
    assert cache.get(one) is v1  # one is now the most recent
    cache.get(three)  # evicts two
    assert cache.get(one) is v1
    assert len(cache._items) == 2


def test_invalid_schema_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid JSON schema"):
        JsonSchemaCheck({"type": "no-such-type"})
    with pytest.raises(ValueError, match="not JSON"):
        JsonSchemaCheck({"type": {1, 2}})


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER, "strict": True}},
            ORDER,
        ),
        ({"type": "json_schema", "json_schema": {"name": "any"}}, None),
        ({"type": "json_schema", "json_schema": "oops"}, None),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}, None),
        ({"type": "json_object"}, None),
        ({"type": "text"}, None),
        (None, None),
        ("json", None),
        ({}, None),
    ],
)
def test_schema_from_response_format(response_format: Any, expected: dict[str, Any] | None) -> None:
    assert schema_from_response_format(response_format) == expected


@pytest.mark.parametrize("where", ["$ref", "$dynamicRef", "nested"])
def test_a_schema_never_makes_the_gateway_fetch_a_url(where: str) -> None:
    """The schema is the client's (response_format). jsonschema fetches an http(s) $ref by default, with urllib,
    on the event loop and without a timeout: a request to any host the gateway reaches (a metadata service). The
    reference is refused instead, and the answer's check fails as a schema at fault does."""
    import http.server
    import threading

    fetched: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"type": "string"}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/latest/meta-data"
    schema: dict[str, Any] = {
        "$ref": {"$ref": url},
        "$dynamicRef": {"$dynamicRef": url},
        "nested": {"type": "object", "properties": {"a": {"items": {"$ref": url}}}},
    }[where]
    try:
        with pytest.raises(ValueError, match="the schema cannot be applied"):
            JsonSchemaCheck(schema).check('{"a": [1]}' if where == "nested" else "5")
    finally:
        server.shutdown()
        server.server_close()
    assert fetched == []


def test_references_inside_the_schema_still_resolve() -> None:
    schema = {"$defs": {"price": {"type": "number"}}, "type": "object", "properties": {"p": {"$ref": "#/$defs/price"}}}
    assert not JsonSchemaCheck(schema).check('{"p": 1.5}').triggered
    assert JsonSchemaCheck(schema).check('{"p": "x"}').triggered
