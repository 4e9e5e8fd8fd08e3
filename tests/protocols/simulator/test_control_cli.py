"""The JSON-lines control port, and `meterflow simulate` as a real process stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from decimal import Decimal
from pathlib import Path

from libs.protocols import dlt645
from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.control import ControlPort
from libs.protocols.simulator.runtime import Site

from .conftest import TcpClient
from .test_dlt645_meter import A1, read, value

ROOT = Path(__file__).resolve().parents[3]


async def control(port: int, *requests: dict) -> list[dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for request in requests:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        replies.append(json.loads(await reader.readline()))
    writer.close()
    await writer.wait_closed()
    return replies


async def test_control_port_drives_faults(site: Site, clock: ManualClock) -> None:
    port = ControlPort(site)
    await port.start()
    try:
        status, offline, bad, advance, meter = await control(
            port.port,
            {"op": "status"},
            {"op": "offline", "meter": f"e/{A1}"},
            {"op": "offline", "meter": "e/404"},
            {"op": "advance", "seconds": 3600},
            {"op": "meter", "meter": f"e/{A1}"},
        )
        assert {line["bus"] for line in status["buses"]} == set(site.buses)
        assert offline == {"ok": True}
        assert bad["ok"] is False
        assert "404" in bad["error"]
        assert advance["ok"] is True
        assert meter["meter"]["total"] > 100
        client = await TcpClient.connect(site, "e")
        assert await client.silent(read(A1, "00010000"))
        await control(
            port.port,
            {"op": "offline", "meter": f"e/{A1}", "on": False},
            {"op": "link", "bus": "e", "kind": "drop", "count": 1},
        )
        assert await client.silent(read(A1, "00010000"))
        assert (await value(client, A1, "00010000"))["forward_active_energy_total"] > Decimal(100)
        (unknown,) = await control(port.port, {"op": "explode"})
        assert unknown["ok"] is False
        await client.close()
    finally:
        await port.stop()


async def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "simulate",
        "--base-port",
        "0",
        "--pty",
        "--seed",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        lines = []
        async with asyncio.timeout(20):
            while True:
                line = json.loads(await proc.stdout.readline())
                lines.append(line)
                if "control" in line:
                    break
        buses = {line["bus"]: line for line in lines if "bus" in line}
        assert set(buses) == {"c1-b1", "c1-b2", "c2-b1", "c2-b2"}
        assert all(line["pty"].startswith("/dev/pts/") for line in buses.values())
        host, port = buses["c1-b1"]["tcp"].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(dlt645.encode(dlt645.read("000000000001", "00010000")))
        await writer.drain()
        buf = b""
        async with asyncio.timeout(5):
            while (frame := dlt645.decode(buf)[1]) is None:
                buf += await reader.read(64)
        assert dlt645.values(frame)["forward_active_energy_total"][0] >= Decimal("1234.50")
        writer.close()
        await writer.wait_closed()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out.decode().splitlines()[-1]) == {"stopped": "default"}


def test_cli_refuses_a_bad_site_file(tmp_path: Path) -> None:
    import argparse

    from libs.protocols.simulator import cli

    bad = tmp_path / "site.json"
    bad.write_text('{"concentrators": [{"name": "c", "buses": [{"name": "b", "protocol": "x"}]}]}')
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    assert cli.run(parser.parse_args(["--site", str(bad)])) == 2
