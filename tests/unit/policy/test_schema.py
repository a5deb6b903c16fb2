"""config/policy.schema.json: the editors' schema accepts every sample policy file and rejects bad ones."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from gateway.policy import model
from gateway.policy.loader import read_yaml
from gateway.policy.problems import Reporter

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = orjson.loads((ROOT / "config" / "policy.schema.json").read_bytes())
VALIDATOR = Draft202012Validator(SCHEMA)
SAMPLES = sorted(
    p
    for folder in (Path(__file__).parent / "fixtures" / "policies", ROOT / "policies")
    if folder.is_dir()
    for p in folder.iterdir()
    if p.suffix in (".yaml", ".yml")
)


def load(text: str):
    # The gateway's own reader: YAML 1.2 booleans, as editors read the file.
    reporter = Reporter("sample")
    data = read_yaml(text, reporter)
    assert not reporter.problems
    return data


def test_the_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_policy_file_is_valid(path):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(load(path.read_text()))]
    assert not errors


@pytest.mark.parametrize(
    "text",
    [
        "policies:\n  - name: Bad Name\n",
        "policies:\n  - {name: p, prority: 1}\n",
        "policies:\n  - {name: p, mode: enforced}\n",
        "policies:\n  - {name: p, match: {plann: free}}\n",
        "policies:\n  - {name: p, match: {tokens: {greater: 3}}}\n",
        "policies:\n  - {name: p, when: {field: plan}}\n",
        "policies:\n  - {name: p, when: {all: []}}\n",
        "policies:\n  - {name: p, actions: {deny: {status: 200}}}\n",
        "policies:\n  - {name: p, actions: {route: {regions: eu}}}\n",
        "policies:\n  - {name: p, actions: {guardrails: {pi: {action: block}}}}\n",
        "policies:\n  - {name: p, actions: {guardrails: {pii: {action: retry}}}}\n",
        "policies:\n  - {name: p, actions: {rewrite: {set: {model: x}}}}\n",
        "rules: []\n",
    ],
)
def test_invalid_samples_are_rejected(text):
    assert not VALIDATOR.is_valid(load(text))


def test_the_schema_names_the_same_vocabulary_as_the_model():
    defs = SCHEMA["$defs"]
    assert tuple(defs["actions"]["properties"]) == model.ACTIONS
    assert tuple(defs["guardrails"]["properties"]) == model.CHECKS
    assert tuple(defs["operators"]["properties"]) == model.OPERATORS
    assert set(defs["match"]["properties"]) == {*model.FIELDS, "metadata"}
    for check, actions in model.CHECK_ACTIONS.items():
        assert tuple(defs["guardrails"]["properties"][check]["properties"]["action"]["enum"]) == actions
    assert tuple(defs["policy"]["properties"]["mode"]["enum"]) == model.MODES
