"""The OpenAPI document is the contract: errors, bounds, descriptions, examples, links."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.errors import PROBLEM_JSON
from app.main import create_app
from app.schemas import MAX_ID
from tests.factories import register
from tests.server import running_server

PUBLIC = {"/users", "/login", "/healthz", "/readyz", "/metrics"}


def make_document(tmp: Path, **settings: Any) -> dict[str, Any]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp / 'msgsync.db'}", **settings))
    doc: dict[str, Any] = app.openapi()
    return doc


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_document(tmp_path_factory.mktemp("openapi"))


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def parameter(document: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    for found in document["paths"][path][method]["parameters"]:
        if found["name"] == name:
            schema: dict[str, Any] = found["schema"]
            return schema
    raise AssertionError(f"{method} {path} has no parameter {name}")


def test_errors_are_problems_and_fastapis_422_is_gone(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in str(document)
    assert "Problem" in document["components"]["schemas"]
    for method, path, operation in operations(document):
        statuses = {int(s) for s in operation["responses"]}
        assert {500, 503} <= statuses, (method, path)
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = response["content"]
            assert list(content) == [PROBLEM_JSON], (method, path, status)
            assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
            codes = list(content[PROBLEM_JSON]["examples"])
            assert codes, (method, path, status)
            # The description names each code, for readers of /docs.
            assert all(f"`{code}`" in response["description"] for code in codes)


def test_each_operation_documents_the_errors_it_can_answer(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        if path not in PUBLIC:
            assert "unauthorized" in responses["401"]["content"][PROBLEM_JSON]["examples"]
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        if "requestBody" in operation:
            for status, code in (("400", "bad_request"), ("413", "request_too_large")):
                assert code in responses[status]["content"][PROBLEM_JSON]["examples"], path
        if "requestBody" in operation or operation.get("parameters"):
            examples = responses["422"]["content"][PROBLEM_JSON]["examples"]
            assert "validation_error" in examples, (method, path)
        retry_after = responses["503"]["headers"]["Retry-After"]
        assert retry_after["schema"]["type"] == "integer"
    by_id = {op["operationId"]: op for _, _, op in operations(document)}

    def codes(operation_id: str, status: str) -> set[str]:
        return set(by_id[operation_id]["responses"][status]["content"][PROBLEM_JSON]["examples"])

    assert codes("send_message", "404") == {"recipient_not_found"}
    assert codes("send_message", "413") == {"body_too_large", "request_too_large"}
    assert codes("recall_message", "403") == {"not_sender"}
    assert codes("sync", "409") == {"since_ahead"}
    assert codes("sync", "422") == {"validation_error", "limit_out_of_range"}
    assert codes("ack", "409") == {"ack_ahead"}
    assert codes("create_user", "409") == {"user_exists"}
    assert codes("login", "401") == {"bad_credentials"}


def test_bounds_are_in_the_schema(document: dict[str, Any]) -> None:
    assert parameter(document, "/sync", "get", "limit") == {
        **parameter(document, "/sync", "get", "limit"),
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
    }
    for path in ("/conversations", "/conversations/{peer}/messages"):
        assert parameter(document, path, "get", "limit")["maximum"] == 200
    timeout = parameter(document, "/sync", "get", "timeout")
    assert (timeout["minimum"], timeout["x-clamped-to"]) == (0, 60)
    for path, method, name in [
        ("/sync", "get", "since"),
        ("/conversations", "get", "before"),
        ("/conversations/{peer}/messages", "get", "before_id"),
        ("/messages/{message_id}/recall", "post", "message_id"),
    ]:
        assert parameter(document, path, method, name)["maximum"] == MAX_ID, (path, name)
    schemas = document["components"]["schemas"]
    assert schemas["AckIn"]["properties"]["version"]["maximum"] == MAX_ID
    assert schemas["ReadIn"]["properties"]["up_to_message_id"]["maximum"] == MAX_ID
    body = schemas["SendIn"]["properties"]["body"]
    assert (body["maxLength"], body["pattern"]) == (16384, r"^[^\x00]*$")
    assert schemas["LoginIn"]["properties"]["device_name"]["maxLength"] == 128
    for method, path, operation in operations(document):
        if "requestBody" in operation:
            assert operation["requestBody"]["x-max-bytes"] == 65536, (method, path)
            assert "65536 bytes" in operation["requestBody"]["description"]


def test_bounds_follow_the_servers_settings(tmp_path: Path) -> None:
    document = make_document(
        tmp_path,
        sync_max_limit=50,
        history_max_limit=20,
        max_body_bytes=100,
        max_timeout=5,
        max_request_bytes=2048,
    )
    assert document["paths"]["/ack"]["post"]["requestBody"]["x-max-bytes"] == 2048
    assert parameter(document, "/sync", "get", "limit")["maximum"] == 50
    assert parameter(document, "/conversations", "get", "limit")["maximum"] == 20
    assert parameter(document, "/sync", "get", "timeout")["x-clamped-to"] == 5
    assert document["components"]["schemas"]["SendIn"]["properties"]["body"]["maxLength"] == 100


def _missing_descriptions(name: str, schema: dict[str, Any]) -> list[str]:
    missing = [] if schema.get("description") else [name]
    for field, prop in schema.get("properties", {}).items():
        if not prop.get("description"):
            missing.append(f"{name}.{field}")
    return missing


def test_every_schema_and_field_is_described(document: dict[str, Any]) -> None:
    missing: list[str] = []
    for name, schema in document["components"]["schemas"].items():
        missing += _missing_descriptions(name, schema)
    for method, path, operation in operations(document):
        assert operation.get("summary"), (method, path)
        assert operation.get("operationId"), (method, path)
        for found in operation.get("parameters", []):
            if not found.get("description"):
                missing.append(f"{method} {path} {found['name']}")
    assert missing == []
    main = ["SendIn", "SyncPage", "AckIn", "LoginIn", "UserIn", "MessageOut", "Problem"]
    assert [
        name for name in main if not document["components"]["schemas"][name].get("examples")
    ] == []


def test_descriptions_speak_of_the_product_only(document: dict[str, Any]) -> None:
    """No internal module names (app.longpoll and the like) in what clients read."""
    text = str(document)
    assert re.findall(r"\bapp\.[a-z_]+", text) == []
    assert "../shared" not in text


def test_links_point_at_real_operations_and_parameters(document: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, op in operations(document)}
    links = [
        link
        for _, _, operation in operations(document)
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 5
    for link in links:
        target = by_id[link["operationId"]]
        names = {p["name"] for p in target.get("parameters", [])}
        assert set(link.get("parameters", {})) <= names, link
        if "requestBody" in link:
            body_ref = target["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            body = document["components"]["schemas"][body_ref.rpartition("/")[2]]
            assert set(link["requestBody"]) <= set(body["properties"]), link


async def test_the_served_document_is_the_completed_one(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'msgsync.db'}"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://msgsync.test"
        ) as client,
    ):
        served = (await client.get("/openapi.json")).json()
        assert served["paths"]["/sync"]["get"]["responses"]["409"]
        assert "HTTPValidationError" not in str(served)
        # A real validation problem has the documented shape.
        device = await register(client)
        problem = await client.post("/ack", json={"version": True}, headers=device.headers)
        assert problem.headers["content-type"] == PROBLEM_JSON
        body = problem.json()
        required = served["components"]["schemas"]["Problem"]["required"]
        assert set(required) <= body.keys()
        issue = served["components"]["schemas"]["ValidationIssue"]["required"]
        assert set(issue) <= body["errors"][0].keys()
        # The documented example looks like the real answer, but for its wording.
        examples = served["paths"]["/ack"]["post"]["responses"]["422"]["content"][PROBLEM_JSON]
        example = examples["examples"]["validation_error"]["value"]
        assert example.keys() == body.keys()
        assert {k: example[k] for k in ("type", "title", "status", "code")} == {
            k: body[k] for k in ("type", "title", "status", "code")
        }


@pytest.mark.server
def test_a_generated_client_can_send_and_sync(tmp_path: Path) -> None:
    """openapi-python-client builds a typed client from the document, and that client
    registers, logs in, sends, syncs, acks and reads a problem, against a real server."""
    with running_server(f"sqlite:///{tmp_path / 'msgsync.db'}") as server:
        (tmp_path / "openapi.json").write_bytes(httpx.get(f"{server.url}/openapi.json").content)
        generated = subprocess.run(
            [
                sys.executable,
                "-m",
                "openapi_python_client",
                "generate",
                "--path",
                str(tmp_path / "openapi.json"),
                "--meta",
                "none",
                "--output-path",
                str(tmp_path / "msgsync_client"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert generated.returncode == 0, generated.stdout + generated.stderr
        assert "Warning" not in generated.stdout + generated.stderr
        script = CLIENT_SCRIPT.replace("BASE_URL", server.url)
        ran = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert ran.stdout.split() == ["sent", "synced", "acked", "since_ahead"]


# Runs beside the generated package (a fresh interpreter, so nothing of this process leaks in).
CLIENT_SCRIPT = """
import uuid
from msgsync_client import AuthenticatedClient, Client
from msgsync_client.api.accounts import create_user, login
from msgsync_client.api.sync import ack, send_message, sync
from msgsync_client.models import AckIn, LoginIn, Problem, SendIn, SendOut, SyncPage, UserIn

anon = Client(base_url="BASE_URL")
users = [f"g-{uuid.uuid4().hex[:8]}" for _ in range(2)]
tokens = []
for user in users:
    create_user.sync(client=anon, body=UserIn(user_id=user, password="long enough"))
    device = login.sync(client=anon, body=LoginIn(user_id=user, password="long enough"))
    tokens.append(device.access_token)
alice, bob = (AuthenticatedClient(base_url="BASE_URL", token=t) for t in tokens)
sent = send_message.sync(client=alice, body=SendIn(to=users[1], body="hi", client_msg_id="c-1"))
assert isinstance(sent, SendOut) and sent.message.body == "hi", sent
print("sent")
page = sync.sync(client=bob, since=0)
assert isinstance(page, SyncPage) and page.entries[0].data.id == sent.message.id, page
print("synced")
acked = ack.sync(client=bob, body=AckIn(version=page.next_since))
assert acked.acked_version == page.next_since, acked
print("acked")
problem = sync.sync(client=bob, since=page.latest_version + 5)
assert isinstance(problem, Problem) and problem.latest_version == page.latest_version, problem
print(problem.code)
"""
