"""``GatheringTransport``: what one loop turn writes leaves as one write, in order, and
closing sends what is gathered first."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.cli.http_protocol import GatheringHttpToolsProtocol, GatheringTransport


class Wire:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True


def test_writes_of_one_turn_leave_as_one_write_in_order() -> None:
    async def body() -> None:
        wire = Wire()
        t = GatheringTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(memoryview(b"body"))
        assert wire.writes == []
        await asyncio.sleep(0)
        assert wire.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        t.write(b"next")
        await asyncio.sleep(0)
        assert wire.writes[-1] == b"next"

    asyncio.run(body())


def test_close_sends_what_is_gathered_first_and_nothing_after() -> None:
    async def body() -> None:
        wire = Wire()
        t = GatheringTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"last words")
        t.close()
        assert wire.writes == [b"last words"]
        assert wire.closed
        await asyncio.sleep(0)  # the scheduled send finds nothing left
        assert wire.writes == [b"last words"]

    asyncio.run(body())


def test_everything_else_reaches_the_real_transport() -> None:
    async def body() -> None:
        wire = Wire()
        t: Any = GatheringTransport(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.pause_reading()
        assert wire.paused
        assert t.is_closing() is False

    asyncio.run(body())


def test_a_served_response_is_one_write(monkeypatch: Any) -> None:
    """Through uvicorn's own protocol code: status line, headers and body in one write."""
    from tests.service.harness import make_harness

    h = make_harness()

    async def body() -> None:
        loop = asyncio.get_running_loop()
        wire = Wire()
        names = {"sockname": ("127.0.0.1", 8700), "peername": ("127.0.0.1", 5)}
        wire.get_extra_info = lambda name, default=None: names.get(name, default)  # type: ignore[attr-defined]
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        config = Config(app=h.app, lifespan="off", http=GatheringHttpToolsProtocol, access_log=False)
        config.load()
        protocol = GatheringHttpToolsProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        protocol.connection_made(wire)  # type: ignore[arg-type]
        protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(50):
            await asyncio.sleep(0)
            if wire.writes:
                break
        await asyncio.sleep(0.01)
        assert len(wire.writes) == 1, wire.writes
        assert wire.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert wire.writes[0].endswith(b'{"status":"ok"}')

    asyncio.run(body())
