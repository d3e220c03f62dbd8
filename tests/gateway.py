"""A Matrix push gateway for tests: real HTTP, records every request, fails on demand."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NOTIFY_PATH = "/_matrix/push/v1/notify"


@dataclass
class Script:
    """What the gateway answers for one pushkey: these statuses first, then 200; each of the
    first requests waits its `holds` seconds (once recorded) before it is answered."""

    statuses: list[int] = field(default_factory=list)
    reject: bool = False
    holds: list[float] = field(default_factory=list)


class Gateway:
    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: serve https with this server context (see tests/tls.py)."""
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (path, body)
        self.scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                pushkeys = [d["pushkey"] for d in body.get("notification", {}).get("devices", [])]
                with gateway._lock:
                    gateway.requests.append((self.path, body))
                    script = gateway.scripts.get(pushkeys[0]) if pushkeys else None
                    status = script.statuses.pop(0) if script and script.statuses else 200
                    hold = script.holds.pop(0) if script and script.holds else 0.0
                if hold:
                    time.sleep(hold)  # this request's own thread: a push kept in flight
                if status in (301, 302, 307, 308):
                    self.send_response(status)
                    self.send_header("Location", f"{gateway.url}/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = {"rejected": pushkeys if script and script.reject else []}
                payload = json.dumps(answer if status == 200 else {"error": "down"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            # The handshake runs in each request's thread, not in the accepting one.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port: int = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.notify_url = self.url + NOTIFY_PATH

    def pushes(self, pushkey: str) -> list[dict[str, Any]]:
        """The notifications sent for this pushkey, in the order they arrived."""
        with self._lock:
            return [
                body["notification"]
                for path, body in self.requests
                if path == NOTIFY_PATH
                and any(d["pushkey"] == pushkey for d in body["notification"]["devices"])
            ]

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    async def wait_for(self, pushkey: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        """The first `count` pushes for this pushkey, once they have all arrived."""
        async with asyncio.timeout(timeout):
            # Polled: the gateway answers on threads of its own, outside the event loop.
            while len(found := self.pushes(pushkey)) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return found


@contextmanager
def running_gateway(port: int = 0, tls: ssl.SSLContext | None = None) -> Iterator[Gateway]:
    gateway = Gateway(port, tls)
    thread = threading.Thread(target=gateway._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        gateway._server.shutdown()
        gateway._server.server_close()
        thread.join()
