"""GET /v1/responses/{id}/input_items pages: any query a client sends is a page or a 400, never a bug."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from gateway.api.responses import _page
from gateway.errors import InvalidRequest

ITEMS: list[dict[str, Any]] = [{"id": f"in_{n}", "type": "message"} for n in range(30)]
IDS = st.sampled_from([item["id"] for item in ITEMS])
QUERY = st.fixed_dictionaries(
    {},
    optional={
        "limit": st.text(max_size=4) | st.integers(-5, 200).map(str) | st.sampled_from(["²", "٣", "1e1", "0x1"]),
        "order": st.text(max_size=4) | st.sampled_from(["asc", "desc"]),
        "after": st.text(max_size=4) | IDS,
        "before": st.text(max_size=4) | IDS,
    },
)


@settings(max_examples=500, database=None, deadline=None)
@given(query=QUERY)
def test_any_query_is_a_page_or_a_400(query: dict[str, str]) -> None:
    try:
        page = _page(ITEMS, query)
    except InvalidRequest:
        return
    assert len(page["data"]) <= int(query.get("limit", "20"))
    assert page["first_id"] == (page["data"][0]["id"] if page["data"] else None)


@pytest.mark.parametrize("limit", ["²", "٣", "１"])
def test_a_limit_of_non_ascii_digits_is_a_400(limit: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _page(ITEMS, {"limit": limit})
    assert refused.value.param == "limit"
