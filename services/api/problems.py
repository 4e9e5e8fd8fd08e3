"""RFC 9457 ``application/problem+json`` for every error the API returns.

Domain code raises :class:`Problem`; FastAPI's ``HTTPException`` and request validation errors
are rendered the same way, so a client parses one error shape everywhere.
"""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"
_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 415: "Unsupported media type", 422: "Unprocessable content", 503: "Service unavailable",
}  # fmt: skip


class ProblemDetail(BaseModel):
    """The problem document (RFC 9457 §3.1) plus ``errors`` for validation failures."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class Problem(Exception):
    """A domain error the API reports as a problem document."""

    def __init__(
        self, status: int, detail: str, title: str | None = None, type_: str = "about:blank"
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.type = status, detail, type_
        self.title = title or _TITLES.get(status, "Error")


def not_found(what: str, ident: str) -> Problem:
    """The 404 for an id the caller cannot see — the same whether it exists elsewhere or not."""
    return Problem(404, f"{what} {ident!r} not found")


def problem_response(
    request: Request, status: int, title: str, detail: str | None, type_: str = "about:blank", **extra: Any
) -> JSONResponse:
    body = ProblemDetail(
        type=type_, title=title, status=status, detail=detail, instance=request.url.path, **extra
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(exclude_none=True), status, headers=headers, media_type=MEDIA_TYPE)


# The error responses every protected route may give, for the OpenAPI document.
_DOC = {"model": ProblemDetail, "content": {MEDIA_TYPE: {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed request body", **_DOC},
    401: {"description": "not authenticated", **_DOC},
    403: {"description": "permission denied", **_DOC},
    404: {"description": "not found (or not visible to the caller)", **_DOC},
    422: {"description": "invalid request", **_DOC},
    503: {"description": "accepted but not yet visible, or a backend is unavailable", **_DOC},
}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "conflict", **_DOC}}


def install(app: FastAPI) -> None:
    """Register the problem handlers on ``app``."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(request, exc.status, exc.title, exc.detail, exc.type)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(request, exc.status_code, _TITLES.get(exc.status_code, "Error"), detail)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        return problem_response(request, 422, _TITLES[422], "the request is invalid", errors=errors)

    async def on_broker(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            request, 503, _TITLES[503], f"the event log is unavailable: {type(exc).__name__}"
        )

    app.add_exception_handler(KafkaError, on_broker)
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
