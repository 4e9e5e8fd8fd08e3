"""What every request handler reaches through ``ApiDep``: settings, the read model, the fact
writer, the ClickHouse client and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

from clickhouse_connect.driver.client import Client
from fastapi import Depends, Request

from libs.events.base import Event, utcnow
from services.api.payments import AlipayNotifier, WechatPayNotifier
from services.api.problems import Problem
from services.api.readmodel import ReadModel
from services.api.settings import ApiSettings
from services.api.views import Views
from services.api.writer import Writer

if TYPE_CHECKING:
    from services.api.deliveries import Deliverer

T = TypeVar("T")


@dataclass(frozen=True)
class Notifiers:
    """The configured payment providers (None = that provider's notify route answers 404)."""

    wechat: WechatPayNotifier | None = None
    alipay: AlipayNotifier | None = None


@dataclass
class Api:
    settings: ApiSettings
    readmodel: ReadModel
    writer: Writer
    clickhouse: Client | None
    notifiers: Notifiers = field(default_factory=lambda: Notifiers())
    deliverer: Deliverer | None = None
    clock: Callable[[], datetime] = utcnow  # aware now: what "now" means to time-dependent answers

    @property
    def views(self) -> Views:
        return self.readmodel.views

    async def publish_and_wait(self, fact: Event, check: Callable[[], T | None]) -> T:
        """Publish ``fact`` and return ``check()`` once the read model shows its effect (503 if
        that takes longer than ``MF_API_APPLY_TIMEOUT_S``: the fact is in the log regardless)."""
        await self.writer.publish(fact)
        found = await self.readmodel.wait_until(check, max(self.settings.api_apply_timeout_s, 0.5))
        if found is None:
            raise Problem(503, "accepted, but not yet visible; read it again shortly", "Not yet visible")
        return found


async def _api(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


ApiDep = Annotated[Api, Depends(_api)]
