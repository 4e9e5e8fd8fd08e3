"""Cascade (A7): a bus also reachable through an alternate concentrator's port."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site
from libs.protocols.simulator.site import SiteConfig

from .conftest import TcpClient, site_config
from .test_dlt645_meter import A1, read, value


def cascaded() -> SiteConfig:
    config = site_config()
    config.concentrators[0].buses[0].alternate_concentrator = "c2"  # bus "e" of c1, also via c2
    return SiteConfig.model_validate(config.model_dump())


async def _via_alternate(site: Site) -> TcpClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", site.alternates["e"].port)
    return TcpClient(reader, writer)


async def test_alternate_port_answers_while_the_primary_concentrator_is_dead() -> None:
    site = Site(cascaded(), clock=ManualClock(), seed=1)
    await site.start()
    try:
        line = next(d for d in site.endpoints() if d["bus"] == "e")
        assert line["alternate"] == {"concentrator": "c2", "tcp": f"127.0.0.1:{site.alternates['e'].port}"}
        primary, alternate = await TcpClient.connect(site, "e"), await _via_alternate(site)
        site.set_dead("c1")
        assert await primary.silent(read(A1, "00010000"))
        assert (await value(alternate, A1, "00010000"))["forward_active_energy_total"] == Decimal("100.00")
        site.set_dead("c2")  # now both paths are down
        assert await alternate.silent(read(A1, "00010000"))
        site.set_dead("c1", False)
        assert (await value(primary, A1, "00010000"))["forward_active_energy_total"] == Decimal("100.00")
        await primary.close()
        await alternate.close()
    finally:
        await site.stop()


def test_alternate_must_be_another_known_concentrator() -> None:
    data = site_config().model_dump()
    data["concentrators"][0]["buses"][0]["alternate_concentrator"] = "c1"
    with pytest.raises(ValueError, match="alternate concentrator"):
        SiteConfig.model_validate(data)
    data["concentrators"][0]["buses"][0]["alternate_concentrator"] = "nope"
    with pytest.raises(ValueError, match="alternate concentrator"):
        SiteConfig.model_validate(data)
