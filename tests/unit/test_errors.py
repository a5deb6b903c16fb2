"""error_type, the record's and the errors metric's name for an error, is the code the client saw, in snake_case,
for every error of the tree; its vocabulary stays closed (a metric label) because every code the gateway sets is
a literal."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from gateway import errors
from gateway.errors import GatewayError, PolicyDenied, UpstreamRejected, error_type_values

PACKAGE = Path(errors.__file__).parent
ALL = errors._subclasses(GatewayError)
# Their code comes from outside the gateway (a policy file, a provider's answer): the record keeps their kind.
FOREIGN = (PolicyDenied, UpstreamRejected)


def make(cls: type[GatewayError], code: str | None = None) -> GatewayError:
    """An instance of any error class, whatever its constructor asks."""
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "policy" in params:
        kwargs["policy"] = "p"
    if "check" in params:
        kwargs.update(check="pii", stage="input")
    if "status" in params and params["status"].default is inspect.Parameter.empty:
        kwargs["status"] = 400
    if code is not None and "code" in params:
        kwargs["code"] = code
    return cls("message", **kwargs) if "message" in params else cls()


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_is_recorded_as_the_code_its_client_saw(cls: type[GatewayError]) -> None:
    error = make(cls)
    seen = error.to_dict()["error"]["code"]  # type: ignore[index]
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", error.error_type), error.error_type
    if issubclass(cls, FOREIGN):
        assert error.error_type == cls.kind
        assert make(cls, code="Whatever-The-Upstream-Said").error_type == cls.kind
    elif seen is not None:
        assert error.error_type == seen
        if "code" in inspect.signature(cls.__init__).parameters:
            assert make(cls, code="key_revoked").error_type == "key_revoked"  # a more specific code, as sent
    else:
        assert error.error_type == cls.kind


def test_the_budget_error_is_budget_exceeded_everywhere() -> None:
    error = errors.BudgetExceeded("spent")
    assert error.error_type == error.to_dict()["error"]["code"] == "budget_exceeded"  # type: ignore[index]


def test_a_legacy_class_name_filters_for_its_kind_and_finds_old_records() -> None:
    assert error_type_values("BudgetExceeded") == ("budget_exceeded", "BudgetExceeded")
    assert error_type_values("budget_exceeded") == ("budget_exceeded", "BudgetExceeded")
    assert error_type_values("rate_limit_exceeded") == ("rate_limit_exceeded", "RateLimited")
    assert error_type_values("key_revoked") == ("key_revoked",)


def _codes_set_in(path: Path) -> list[tuple[int, str, ast.expr]]:
    """(line, class, the `code=` value) of every error of the tree constructed in a module."""
    names = {cls.__name__ for cls in ALL}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            found += [(node.lineno, node.func.id, kw.value) for kw in node.keywords if kw.arg == "code"]
    return found


def test_every_code_the_gateway_sets_is_a_literal() -> None:
    """So error_type, a metric label, cannot take a value from a request: a code made from input would be one."""
    foreign = {cls.__name__ for cls in ALL if issubclass(cls, FOREIGN)}
    loose = []
    for path in PACKAGE.rglob("*.py"):
        for line, name, value in _codes_set_in(path):
            literal = isinstance(value, ast.Constant) and isinstance(value.value, str)
            if not literal and name not in foreign and not (isinstance(value, ast.Name) and value.id == "code"):
                loose.append(f"{path.relative_to(PACKAGE)}:{line} {name}(code={ast.unparse(value)})")
    assert not loose, loose
