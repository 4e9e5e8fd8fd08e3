"""The app factory: ``create_app(settings, bootstrap, clickhouse)`` builds the FastAPI app, whose
lifespan starts the fact writer and the read model, waits until the read model caught up, and
creates the first administrator on a fresh install. Tests build it in-process the same way."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, Response
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import identity, problems
from services.api.context import Api, Notifiers
from services.api.deliveries import Deliverer
from services.api.payment_notices import notifiers_from
from services.api.readmodel import ReadModel
from services.api.routes import (
    accounts,
    alarms,
    allowance_plans,
    auth,
    commands,
    notifications,
    payments,
    projects,
    reports,
    tariffs,
    topology,
    users,
    webhooks,
)
from services.api.security import SECURITY_SCHEMES
from services.api.settings import ApiSettings
from services.api.writer import Writer

log = logging.getLogger(__name__)
ROUTERS = tuple(
    m.router
    for m in (
        auth,
        projects,
        topology,
        accounts,
        allowance_plans,
        tariffs,
        commands,
        alarms,
        notifications,
        reports,
        users,
        payments,
        webhooks,
    )
)
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/auth/token", "/payments/wechat/notify", "/payments/alipay/notify"}
)
"""Routes that need no principal; every other route must declare a permission (tested)…"""
SELF_PATHS = frozenset({"/auth/me"})
"""…except these, which any authenticated principal may call about itself."""


class _Metrics:
    """Pure ASGI middleware counting requests per route template and status, with latency."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "mf_api_requests", "requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "mf_api_request_seconds", "request latency", ["route"], registry=registry,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            name = route.path if isinstance(route, APIRoute) else "unmatched"
            self.requests.labels(scope["method"], name, str(status[0])).inc()
            self.latency.labels(name).observe(time.perf_counter() - started)


def permission_of(route: APIRoute) -> str | None:
    """The permission a route requires (from its ``require(...)`` dependency), if any."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        permission = getattr(dep.call, "permission", None)
        if permission is not None:
            return str(permission)
        stack.extend(dep.dependencies)
    return None


def create_app(
    settings: ApiSettings,
    bootstrap: str,
    clickhouse: Client | None = None,
    notifiers: Notifiers | None = None,
) -> FastAPI:
    """The API app; its lifespan connects to the broker at ``bootstrap``. Payment notifiers come
    from ``settings`` unless given."""
    readmodel = ReadModel(bootstrap, sends_kept=settings.api_sends_kept)
    api = Api(settings, readmodel, Writer(bootstrap), clickhouse, notifiers or notifiers_from(settings))
    if settings.api_webhooks_deliver:
        api.deliverer = Deliverer(api, bootstrap)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await api.writer.start()
        try:
            await readmodel.start()
            try:
                try:
                    await asyncio.wait_for(readmodel.ready.wait(), settings.api_ready_timeout_s)
                    await identity.bootstrap_admin(api)
                    # The caught-up views are long-lived: move them out of the collector's sight so
                    # full collections do not rescan them (pauses of 100 ms+ with 10^5 accounts).
                    gc.collect()
                    gc.freeze()
                except TimeoutError:
                    log.error(
                        "read model not caught up after %.0f s; /readyz stays 503",
                        settings.api_ready_timeout_s,
                    )
                if api.deliverer is not None:
                    await api.deliverer.start()
                try:
                    yield
                finally:
                    if api.deliverer is not None:
                        await api.deliverer.stop()
            finally:
                await readmodel.stop()
        finally:
            await api.writer.stop()

    app = FastAPI(
        title="meterflow API",
        version="1",
        description=(__doc__ or "") + "\n\nErrors are application/problem+json (RFC 9457).",
        lifespan=lifespan,
    )
    app.state.api = api
    problems.install(app)
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and (permission := permission_of(route)) is not None:
                route.openapi_extra = {**(route.openapi_extra or {}), "x-permission": permission}
        app.include_router(router)
    _operations(app, api)
    _document_security(app)
    return app


def _document_security(app: FastAPI) -> None:
    """Add the bearer / API-key schemes to the OpenAPI document, on every protected operation."""
    protected = {
        (r.path, m.lower()) for r in api_routes(app) if r.path not in PUBLIC_PATHS for m in r.methods or ()
    }
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in doc["paths"].items():
                for method, operation in operations.items():
                    if (path, method) in protected:
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every documented route of the app: the resource routers' and the app's own."""
    own = [r for r in app.routes if isinstance(r, APIRoute)]
    return [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)] + own


def _operations(app: FastAPI, api: Api) -> None:
    registry = CollectorRegistry()
    app.add_middleware(_Metrics, registry=registry)
    records = Gauge("mf_api_readmodel_records", "records folded by the read model", registry=registry)
    accounts_gauge = Gauge("mf_api_accounts", "accounts in the read model", registry=registry)
    ready = Gauge("mf_api_ready", "1 when the read model caught up", registry=registry)

    @app.get("/healthz", tags=["operations"])
    def healthz(response: Response) -> dict[str, Any]:
        failed = api.readmodel.failed
        response.status_code = 200 if failed is None else 500
        return {"status": "ok" if failed is None else f"read model stopped: {failed!r}"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "not caught up yet"}})
    def readyz(response: Response) -> dict[str, Any]:
        is_ready = api.readmodel.ready.is_set() and api.readmodel.failed is None
        response.status_code = 200 if is_ready else 503
        return {"ready": is_ready, "records": api.readmodel.records, "accounts": len(api.views.accounts)}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        records.set(api.readmodel.records)
        accounts_gauge.set(len(api.views.accounts))
        ready.set(1 if api.readmodel.ready.is_set() else 0)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
