"""The OpenAPI's bearer scheme matches what really needs a token; the docs pages stay local."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.factories import register

# HTTP-layer behaviour: PostgreSQL alone (tests/store/ holds the storage contract on both).
pytestmark = pytest.mark.one_backend

METHODS = {"get", "put", "post", "delete", "patch"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


async def test_every_operation_that_answers_401_without_a_token_declares_bearer(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, operation in operations(document):
        url = re.sub(r"\{[^}]+\}", "1", path)
        answer = await client.request(method, url, json={})
        needs_token = answer.status_code == 401
        assert (operation.get("security") == [{"bearer": []}]) == needs_token, (method, path)
    public = {p for m, p, o in operations(document) if "security" not in o}
    assert {"/users", "/login", "/healthz", "/readyz", "/metrics"} <= public


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "missing bearer token"),
        ("Bearer ", "missing bearer token"),
        ("Bearer not-a-token", "invalid or revoked token"),
    ],
)
async def test_the_scheme_keeps_the_401_problems(
    client: httpx.AsyncClient, authorization: str | None, detail: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await client.get("/devices", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert (answer.json()["code"], answer.json()["detail"]) == ("unauthorized", detail)


async def test_a_token_in_any_case_of_bearer_still_works(client: httpx.AsyncClient) -> None:
    device = await register(client)
    answer = await client.get("/devices", headers={"Authorization": f"bEaReR  {device.token} "})
    assert answer.status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_name_only_their_own_assets(client: httpx.AsyncClient, page: str) -> None:
    answer = await client.get(page)
    assert answer.status_code == 200
    assert "http://" not in answer.text
    assert "https://" not in answer.text
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    for asset in re.findall(r'(?:src|href)="([^"]+)"', answer.text):
        assert asset.startswith("/docs-assets/"), asset
        assert (await client.get(asset)).status_code == 200
