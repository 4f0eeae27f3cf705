"""Paged listings: ``GET /v1/tasks``, ``/v1/nodes`` and ``/v1/services`` with
``?limit=N`` answer ``{"items": [...], "next": CURSOR}``, at most ``N`` objects in the
order of their IDs, the ones after ``?cursor=CURSOR`` (the ``next`` of the page before;
``null`` on the last page). ``limit`` is at most ``MAX_PAGE_ITEMS``, so that no one
answer builds a listing of 100,000 tasks at once (its JSON held the leader's event loop
for seconds). Without ``limit`` the whole list comes, in the listing's own order, as
before paging existed; the CLI always pages.

Pure: the cursor is the last ID of the page (opaque to clients), and a page is the
``limit`` smallest IDs after it, chosen in one pass (O(objects · log limit), no sort of
the whole listing and only the page's objects made public).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, TypeVar

from swarmlet.api.errors import Invalid

MAX_PAGE_ITEMS = 1_000
T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    limit: int
    after: str | None = None  # the cursor: objects with a greater ID


def page_request(query: Mapping[str, str]) -> PageRequest | None:
    """The page a request's query asks for (None: no ``limit``, the whole list);
    ``Invalid`` naming the parameter and the limit."""
    limit, cursor = query.get("limit"), query.get("cursor")
    if limit is None:
        if cursor is not None:
            raise Invalid("cursor is given with limit (the page size, at most "
                          f"{MAX_PAGE_ITEMS})")
        return None
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE_ITEMS:
        raise Invalid(f"limit must be a whole number from 1 to {MAX_PAGE_ITEMS} (the most a page holds), "
                      f"not {limit!r}")
    return PageRequest(int(limit), cursor or None)


def page(items: Iterable[T], request: PageRequest, key: Callable[[T], str],
         public: Callable[[T], dict]) -> dict:
    """``{"items": the page's objects made public, "next": the cursor after it or None}``."""
    after = request.after
    candidates = (item for item in items if after is None or key(item) > after)
    chosen = heapq.nsmallest(request.limit + 1, candidates, key=key)
    more = len(chosen) > request.limit
    chosen = chosen[:request.limit]
    return {"items": [public(item) for item in chosen], "next": key(chosen[-1]) if more else None}
