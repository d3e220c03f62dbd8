"""A fault-injecting HTTP/1.1 proxy between an SDK and a msgsync server.

It runs on its own event loop in a thread, forwards each request to the current upstream,
records what passed, and applies the faults the scenario queued: answer 503 with
Retry-After without forwarding, forward then cut the connection before answering (the
server handled it, the client never hears), or forward then hold the answer forever."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

__all__ = ["Fault", "FaultProxy", "Record"]

Action = Literal["unavailable", "drop_answer", "hold_answer"]


@dataclass
class Fault:
    method: str
    path: str  # prefix of the path, e.g. "/sync"
    action: Action
    times: int = 1
    retry_after: int = 1
    after: int = 0  # matching requests let through untouched before the fault applies


@dataclass
class Record:
    method: str
    path: str
    query: str
    body: Any
    started: float  # time.monotonic() when the request arrived
    status: int | None = None  # None: no answer given (dropped or held)


@dataclass
class FaultProxy:
    upstream: str
    records: list[Record] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._connections: set[asyncio.Task[None]] = set()
            self._never = asyncio.Event()
            self._http = httpx.AsyncClient(timeout=120)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0)
            )
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True, name="fault-proxy")
        self._thread.start()
        ready.wait()
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            # Connections still open (a held answer, a killed client's keep-alive) end here,
            # so no coroutine outlives the loop.
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._http.aclose()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def requests(self, method: str, path: str) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.method == method and r.path == path]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the proxy did not see what the scenario waited for")
            time.sleep(0.01)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and path.startswith(fault.path) and fault.times > 0:
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.times -= 1
                    return fault
        return None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)  # a strong reference: a held answer's task must not be GC'd
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): end quietly, the loop is going away
        finally:
            writer.close()
            self._connections.discard(task)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its answer; False when the connection is to be closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = [tuple(h.split(": ", 1)) for h in header_lines if h]
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        body = await reader.readexactly(length) if length else b""
        path, _, query = target.partition("?")
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = Record(method, path, query, parsed, time.monotonic())
        with self._lock:
            self.records.append(record)
        fault = self._take_fault(method, path)
        if fault is not None and fault.action == "unavailable":
            problem = json.dumps(
                {
                    "type": "about:blank",
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": "injected by the conformance proxy",
                    "code": "database_unavailable",
                }
            ).encode()
            record.status = 503
            await self._answer(
                writer,
                503,
                [
                    ("content-type", "application/problem+json"),
                    ("retry-after", str(fault.retry_after)),
                ],
                problem,
            )
            return True
        key = f"{method} {path}"
        with self._lock:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            self.max_in_flight[key] = max(self.max_in_flight.get(key, 0), self._in_flight[key])
        try:
            forward = {
                k: v
                for k, v in headers
                if k.lower() not in {"host", "content-length", "connection"}
            }
            response = await self._http.request(
                method, self.upstream + target, headers=forward, content=body
            )
        except httpx.TransportError:
            # The server is down (a scenario restarts it): a gateway says so with 502.
            record.status = 502
            await self._answer(writer, 502, [], b"")
            return True
        finally:
            with self._lock:
                self._in_flight[key] -= 1
        if fault is not None and fault.action == "drop_answer":
            return False  # the server handled it; the client sees the connection cut
        if fault is not None and fault.action == "hold_answer":
            await self._never.wait()  # until the client gives up or is killed, or stop()
        record.status = response.status_code
        drop = {"content-length", "transfer-encoding", "content-encoding", "connection"}
        out = [(k, v) for k, v in response.headers.items() if k.lower() not in drop]
        await self._answer(writer, response.status_code, out, response.content)
        return True

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers]
        lines.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
