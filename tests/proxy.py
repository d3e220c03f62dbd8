"""A TCP proxy in front of PostgreSQL that can make the database unreachable the hard way.

Refused connections fail at once; the outages that hang clients are the other kind: a
primary that died while its address (or a stalled server) still accepts and never
answers. `blackhole()` plays that: it ends every connection going through (as the death of
the server does to its sessions) and holds each new one open without a byte of answer;
`resume()` lets the held connections and new ones through to the server, as when the
server (or the network to it) is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.testing import free_port


class StallingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def blackhole(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(5)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    async def _serve(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _shutdown(self) -> None:
        self._server.close()
        await self._cut()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)

    async def _cut(self) -> None:
        self._open.clear()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._open.wait()  # a blackhole: accepted, and not a byte of answer
            if writer.is_closing():
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            await asyncio.gather(
                _pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True
            )
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._clients.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.transport.abort()


@contextmanager
def stalling_proxy(database_url: str) -> Iterator[tuple[StallingProxy, str]]:
    """A proxy in front of database_url's server, and database_url through it."""
    proxy = StallingProxy("127.0.0.1", 5432)
    proxy.start()
    try:
        yield proxy, database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    finally:
        proxy.stop()
