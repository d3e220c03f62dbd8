"""The HTTP API, one attempt per call: retrying is the caller's policy (see backoff.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from msgsync_client.errors import ApiError, HistoryRewritten, SinceAhead, Unauthorized
from msgsync_client.models import Message, Page

__all__ = ["Api", "Transient"]

try:  # orjson, when installed (extra "fast"), decodes a page several times faster
    import orjson

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # the stdlib is enough, only slower

    def _loads(data: bytes) -> Any:
        return json.loads(data)


class Transient(Exception):
    """A failure worth retrying: no answer (network), or 5xx / 429 with its Retry-After."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from msgsync; fall back to our own backoff


class Api:
    """One device's view of a msgsync server over a shared keep-alive httpx client."""

    def __init__(
        self, base_url: str, token: str | None = None, *, http: httpx.AsyncClient | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._owns_http = http is None
        # The long-poll's read timeout is set per request; connects fail fast.
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        token = token or self.token
        headers = {"authorization": f"Bearer {token}"} if token else {}
        # A long-poll may legitimately stay silent for `timeout` seconds: allow that plus a
        # margin before calling the connection dead.
        timeout: httpx.Timeout | httpx._client.UseClientDefault = (
            httpx.Timeout(read_timeout + 15.0, connect=5.0)
            if read_timeout
            else httpx.USE_CLIENT_DEFAULT
        )
        try:
            response = await self._http.request(
                method,
                self.base_url + path,
                json=json,
                params=params,
                headers=headers,
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise Transient(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise Transient(f"{method} {path}: {response.status_code}", _retry_after(response))
        if response.status_code >= 400:
            raise _problem(response)
        return response

    async def create_user(self, user_id: str, password: str) -> None:
        await self._call("POST", "/users", json={"user_id": user_id, "password": password})

    async def login(self, user_id: str, password: str, device_name: str = "") -> dict[str, Any]:
        body = {"user_id": user_id, "password": password, "device_name": device_name}
        result: dict[str, Any] = (await self._call("POST", "/login", json=body)).json()
        return result

    async def logout(self, token: str | None = None) -> None:
        """End the session of `token` (default: this Api's token) on the server."""
        await self._call("POST", "/logout", token=token)

    async def send(self, to: str, body: str, client_msg_id: str) -> tuple[Message, int]:
        payload = {"to": to, "body": body, "client_msg_id": client_msg_id}
        data = (await self._call("POST", "/messages", json=payload)).json()
        return Message.from_json(data["message"]), int(data["version"])

    async def sync(
        self, since: int | None, limit: int, timeout: float = 0, since_id: str | None = None
    ) -> Page:
        params: dict[str, Any] = {"limit": limit, "timeout": timeout}
        if since is not None:
            params["since"] = since
            if since_id is not None and since > 0:
                params["since_id"] = since_id
        response = await self._call("GET", "/sync", params=params, read_timeout=timeout)
        return Page.from_json(_loads(response.content))

    async def ack(self, version: int) -> int:
        data = (await self._call("POST", "/ack", json={"version": version})).json()
        return int(data["acked_version"])

    async def history(
        self, peer: str, limit: int = 50, before_id: int | None = None
    ) -> tuple[list[Message], int | None]:
        params: dict[str, Any] = {"limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        data = (await self._call("GET", f"/conversations/{peer}/messages", params=params)).json()
        return [Message.from_json(m) for m in data["messages"]], data.get("next_before_id")

    async def recall(self, message_id: int) -> Message:
        data = (await self._call("POST", f"/messages/{message_id}/recall")).json()
        return Message.from_json(data["message"])

    async def mark_read(self, peer: str, up_to_message_id: int) -> None:
        body = {"up_to_message_id": up_to_message_id}
        await self._call("POST", f"/conversations/{peer}/read", json=body)


def _problem(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        if not isinstance(body, dict):
            body = {}
    except ValueError:
        body = {}
    code = str(body.get("code") or f"http_{response.status_code}")
    detail = str(body.get("detail") or response.reason_phrase)
    if response.status_code == 401:
        return Unauthorized(401, code, detail, body)
    if response.status_code == 409 and code == "since_ahead":
        return SinceAhead(409, code, detail, body)
    if response.status_code == 409 and code == "history_rewritten":
        return HistoryRewritten(409, code, detail, body)
    return ApiError(response.status_code, code, detail, body)
