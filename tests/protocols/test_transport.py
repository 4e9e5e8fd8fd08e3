"""Transports against real sockets and a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
import socket
import tty

import pytest

from libs.protocols.transport import LineSettings, SerialTransport, TcpTransport, TransportError


def test_line_settings_character_time() -> None:
    line = LineSettings(2400, 8, "E", 1)
    assert line.bits_per_char == 11
    assert line.char_time == pytest.approx(0.0045833, abs=1e-6)
    assert LineSettings(9600, 8, "N", 1).char_time == pytest.approx(10 / 9600)
    assert LineSettings.parse("2400 8E1") == line
    assert LineSettings.parse("1200 7O2").bits_per_char == 11
    assert line.label() == "2400 8E1"
    with pytest.raises(ValueError, match="line settings"):
        LineSettings.parse("2400 8X1")
    with pytest.raises(ValueError, match="impossible"):
        LineSettings(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_tcp_connect_refused_is_typed() -> None:
    transport = TcpTransport("127.0.0.1", _free_port())
    with pytest.raises(TransportError) as info:
        await transport.open()
    assert info.value.reason == "connect"
    with pytest.raises(TransportError, match="not_open"):
        await transport.send(b"x")


async def test_tcp_send_receive_and_peer_close() -> None:
    peer: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.append(writer)
        data = await reader.read(100)
        writer.write(data.upper())
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = TcpTransport("127.0.0.1", port, LineSettings.parse("9600 8N1"))
    await transport.open()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await transport.receive(0) == b""  # never waits
        assert loop.time() - start < 0.05
        assert await transport.receive(0.05) == b""  # waits, then nothing
        await transport.send(b"abc")
        got = b""
        while len(got) < 3:
            got += await transport.receive(1.0)
        assert got == b"ABC"
        peer[0].close()
        with pytest.raises(TransportError) as info:
            await transport.receive(1.0)
        assert info.value.reason == "closed"
    finally:
        await transport.close()
        await transport.close()  # idempotent
        server.close()
        await server.wait_closed()


async def test_serial_on_a_pty_both_directions() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    transport = SerialTransport(path, LineSettings(2400, 8, "E", 1))
    await transport.open()
    try:
        await transport.send(b"\x68\x01\x02")
        await asyncio.sleep(0.05)
        assert os.read(master, 100) == b"\x68\x01\x02"
        os.write(master, b"\x16\x17")
        assert await transport.receive(1.0) == b"\x16\x17"
        assert await transport.receive(0) == b""
    finally:
        await transport.close()
        os.close(master)
        os.close(slave)


async def test_serial_missing_device_is_typed() -> None:
    with pytest.raises(TransportError) as info:
        await SerialTransport("/dev/does-not-exist-meterflow").open()
    assert info.value.reason == "connect"
