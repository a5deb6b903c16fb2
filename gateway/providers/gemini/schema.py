"""JSON Schema rewritten to the OpenAPI subset Gemini accepts for tool parameters and response schemas:
$ref/$defs inlined, nullable types, oneOf as anyOf, implied types filled in, keys and formats the subset
refuses dropped."""

from __future__ import annotations

from typing import Any

import orjson

_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
        "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
        "propertyOrdering", "default", "items", "minimum", "maximum",
    }
)  # fmt: skip
# The subset accepts only these formats; others (uri, email, uuid...) are refused, so they are dropped.
_FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}


def gemini_schema(
    schema: Any, defs: dict[str, Any] | None = None, seen: frozenset[str] = frozenset(), *, ordered: bool = False
) -> dict[str, Any]:
    """A JSON Schema rewritten to Gemini's OpenAPI subset. `ordered` adds propertyOrdering, which Gemini 2.0
    needs to keep a response's keys in the schema's order."""
    if not isinstance(schema, dict):
        return {}
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rpartition("/")[2]
        if name in seen or not isinstance(defs.get(name), dict):
            return {"type": "OBJECT"}  # a recursive or unknown reference: the subset cannot express it
        merged = {**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
        return gemini_schema(merged, defs, seen | {name}, ordered=ordered)
    out: dict[str, Any] = {k: v for k, v in schema.items() if k in _SCHEMA_KEYS and k not in ("anyOf", "items")}
    _types(schema, out, defs, seen, ordered)
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if isinstance(out.get("enum"), list):
        if None in out["enum"]:
            out["nullable"] = True
        # the subset's enum holds strings only
        out["enum"] = [v if isinstance(v, str) else orjson.dumps(v).decode() for v in out["enum"] if v is not None]
    if "type" not in out and "anyOf" not in out:  # JSON Schema may leave the type implied; Gemini needs it
        implied = [("properties", "OBJECT"), ("items", "ARRAY"), ("enum", "STRING")]
        out.update(type=next((kind for key, kind in implied if key in schema or key in out), "STRING"))
    if "format" in out and out["format"] not in _FORMATS.get(out.get("type", ""), ()):
        del out["format"]
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        out["properties"] = {k: gemini_schema(v, defs, seen, ordered=ordered) for k, v in properties.items()}
        if isinstance(out.get("required"), list):
            out["required"] = [name for name in out["required"] if name in properties]
        if ordered and len(properties) > 1 and "propertyOrdering" not in out:
            out["propertyOrdering"] = list(properties)
    else:
        out.pop("properties", None)
        out.pop("required", None)
    if isinstance(schema.get("items"), dict):
        out["items"] = gemini_schema(schema["items"], defs, seen, ordered=ordered)
    return out


def _types(
    schema: dict[str, Any], out: dict[str, Any], defs: dict[str, Any], seen: frozenset[str], ordered: bool
) -> None:
    """`type` (a list in JSON Schema), anyOf/oneOf and allOf, with null members turned into `nullable`."""
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    if "null" in kinds:
        out["nullable"] = True
    kinds = [k.upper() for k in kinds if isinstance(k, str) and k != "null"]
    if len(kinds) == 1:
        out["type"] = kinds[0]
    elif kinds:
        out["anyOf"] = [{"type": k} for k in kinds]
        out.pop("type", None)
    else:
        out.pop("type", None)
    members = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(members, list):
        if any(isinstance(m, dict) and m.get("type") == "null" for m in members):
            out["nullable"] = True
        alternatives = [
            gemini_schema(m, defs, seen, ordered=ordered)
            for m in members
            if isinstance(m, dict) and m.get("type") != "null"
        ]
        if len(alternatives) == 1:
            out.update({k: v for k, v in alternatives[0].items() if k not in out or k == "type"})
        elif alternatives:
            out["anyOf"] = alternatives
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:  # the common {allOf: [{$ref}]} wrapper; no merging beyond
        out.update({k: v for k, v in gemini_schema(all_of[0], defs, seen, ordered=ordered).items() if k not in out})
