"""Offset pagination: ``?limit=&offset=`` in, ``Page[T]`` (items, total, limit, offset, next) out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel

T = TypeVar("T")
S = TypeVar("S")


class PageParams(BaseModel):
    limit: int
    offset: int


async def _page_params(
    limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(_page_params)]


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next`` is the URL of the following page, if there is one."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next: str | None = None


def paginate(
    request: Request, items: Sequence[S], page: PageParams, convert: Callable[[S], T] | None = None
) -> Page[T]:
    """The ``page`` of the already filtered and ordered ``items``; ``convert`` turns only the
    page's items into response bodies (not every item of a long list)."""
    end = page.offset + page.limit
    nxt = str(request.url.include_query_params(offset=end)) if end < len(items) else None
    chosen = items[page.offset : end]
    body = [convert(i) for i in chosen] if convert is not None else list(chosen)
    return Page[T](items=body, total=len(items), limit=page.limit, offset=page.offset, next=nxt)
