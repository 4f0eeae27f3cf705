"""Paged listings (api/paging.py): pages in ID order that together hold every object
once, and a clear refusal of a page size past the limit."""
from __future__ import annotations

import pytest

from swarmlet.api.errors import Invalid
from swarmlet.api.paging import MAX_PAGE_ITEMS, PageRequest, page, page_request


def pages(items: list[str], limit: int) -> list[list[str]]:
    found, cursor = [], None
    while True:
        answer = page(items, PageRequest(limit, cursor), key=str, public=lambda i: {"id": i})
        found.append([i["id"] for i in answer["items"]])
        cursor = answer["next"]
        if cursor is None:
            return found


def test_pages_hold_every_object_once_in_id_order():
    ids = [f"t{n:04d}" for n in (7, 3, 9, 1, 5, 2, 8, 6, 4, 0)]  # the store's order is not the ID order
    assert pages(ids, 4) == [["t0000", "t0001", "t0002", "t0003"], ["t0004", "t0005", "t0006", "t0007"],
                             ["t0008", "t0009"]]
    assert pages(ids, 5) == [sorted(ids)[:5], sorted(ids)[5:]]  # the last full page says there is no more
    assert pages([], 3) == [[]]


def test_only_the_page_is_made_public():
    made = []
    page([str(n) for n in range(100)], PageRequest(3), key=str, public=lambda i: made.append(i) or i)
    assert made == ["0", "1", "10"]


@pytest.mark.parametrize("query, complaint", [
    ({"limit": "0"}, f"limit must be a whole number from 1 to {MAX_PAGE_ITEMS}"),
    ({"limit": str(MAX_PAGE_ITEMS + 1)}, "the most a page holds"),
    ({"limit": "ten"}, "not 'ten'"),
    ({"cursor": "t1"}, "cursor is given with limit"),
])
def test_a_bad_page_is_refused_naming_the_limit(query, complaint):
    with pytest.raises(Invalid, match=complaint):
        page_request(query)


def test_a_request_without_limit_is_the_whole_list():
    assert page_request({}) is None
    assert page_request({"limit": "50", "cursor": "abc"}) == PageRequest(50, "abc")
