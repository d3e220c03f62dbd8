"""The OpenAPI document is the contract: errors, bounds, descriptions, examples, links."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from app import schemas as bodies
from app.config import Settings
from app.main import create_app
from app.problems import PROBLEM_JSON, Problem
from app.schemas import MAX_ID
from tests.factories import register

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

    assert codes("sendMessage", "404") == {"recipient_not_found"}
    assert codes("sendMessage", "413") == {"body_too_large", "request_too_large"}
    assert codes("recallMessage", "403") == {"not_sender"}
    assert codes("sync", "409") == {"since_ahead", "history_rewritten"}
    assert codes("sync", "422") == {"validation_error", "limit_out_of_range"}
    assert codes("ack", "409") == {"ack_ahead"}
    assert codes("createUser", "409") == {"user_exists"}
    assert codes("getUser", "404") == {"user_not_found"}
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
    # A looked-up id is held to registration's rule, stated the same way.
    user_id = parameter(document, "/users/{user_id}", "get", "user_id")
    assert user_id["pattern"] == schemas["UserIn"]["properties"]["user_id"]["pattern"]
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
    """No internal module names (app.inbox.wait and the like) in what clients read."""
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


# The contract a generated client is built from: each operation's id (a client's function
# name) and tag (its module), camelCase verbs, grouped by domain.
OPERATIONS = {
    ("POST", "/users"): ("createUser", "accounts"),
    ("GET", "/users/{user_id}"): ("getUser", "accounts"),
    ("POST", "/password"): ("changePassword", "accounts"),
    ("POST", "/login"): ("login", "devices"),
    ("POST", "/logout"): ("logout", "devices"),
    ("GET", "/devices"): ("listDevices", "devices"),
    ("DELETE", "/devices/{device_id}"): ("deleteDevice", "devices"),
    ("POST", "/messages"): ("sendMessage", "messages"),
    ("POST", "/messages/{message_id}/recall"): ("recallMessage", "messages"),
    ("GET", "/sync"): ("sync", "sync"),
    ("POST", "/ack"): ("ack", "sync"),
    ("GET", "/conversations"): ("listConversations", "conversations"),
    ("GET", "/conversations/{peer}/messages"): ("listMessages", "conversations"),
    ("POST", "/conversations/{peer}/read"): ("markRead", "conversations"),
    ("POST", "/groups"): ("createGroup", "groups"),
    ("GET", "/groups/{group_id}"): ("getGroup", "groups"),
    ("PATCH", "/groups/{group_id}"): ("renameGroup", "groups"),
    ("GET", "/groups/{group_id}/members"): ("listGroupMembers", "groups"),
    ("POST", "/groups/{group_id}/members"): ("addGroupMembers", "groups"),
    ("DELETE", "/groups/{group_id}/members/{user_id}"): ("removeGroupMember", "groups"),
    ("PATCH", "/groups/{group_id}/members/{user_id}"): ("setGroupRole", "groups"),
    ("POST", "/groups/{group_id}/messages"): ("sendGroupMessage", "groups"),
    ("GET", "/groups/{group_id}/events"): ("listGroupEvents", "groups"),
    ("POST", "/groups/{group_id}/read"): ("markGroupRead", "groups"),
    ("POST", "/pushers"): ("registerPusher", "push"),
    ("GET", "/pushers"): ("listPushers", "push"),
    ("DELETE", "/pushers/{app_id}/{pushkey}"): ("deletePusher", "push"),
    ("GET", "/healthz"): ("getHealth", "health"),
    ("GET", "/readyz"): ("getReadiness", "health"),
    ("GET", "/metrics"): ("getMetrics", "operations"),
}


def test_operations_have_deliberate_ids_and_domain_tags(document: dict[str, Any]) -> None:
    found = {
        (method, path): (operation["operationId"], *operation["tags"])
        for method, path, operation in operations(document)
    }
    assert found == OPERATIONS
    for operation_id, _ in OPERATIONS.values():
        assert re.fullmatch(r"[a-z]+([A-Z][a-z]+)*", operation_id), operation_id
    # Every tag used is declared, with a description, in the order /docs shows them.
    tags = [tag["name"] for tag in document["tags"]]
    assert tags == list(dict.fromkeys(tag for _, tag in OPERATIONS.values()))
    assert all(tag["description"] for tag in document["tags"])


def test_entry_is_a_union_discriminated_on_kind(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    kinds = {
        "message": "MessageEntry",
        "recall": "RecallEntry",
        "read": "ReadEntry",
        "group": "GroupEntry",
        "group_news": "GroupNewsEntry",
    }
    entry = schemas["Entry"]
    assert entry["discriminator"] == {
        "propertyName": "kind",
        "mapping": {kind: f"#/components/schemas/{name}" for kind, name in kinds.items()},
    }
    assert sorted(option["$ref"] for option in entry["oneOf"]) == sorted(
        entry["discriminator"]["mapping"].values()
    )
    data = {
        "message": "MessageOut",
        "recall": "RecallData",
        "read": "ReadData",
        "group": "GroupEntryData",
        "group_news": "GroupNewsData",
    }
    for kind, name in kinds.items():
        properties = schemas[name]["properties"]
        assert properties["kind"]["const"] == kind
        assert properties["data"]["$ref"] == f"#/components/schemas/{data[kind]}"
        assert set(schemas[name]["required"]) == {"version", "id", "kind", "created_at", "data"}
    assert schemas["SyncPage"]["properties"]["entries"]["items"] == {
        "$ref": "#/components/schemas/Entry"
    }


def _examples(node: Any) -> list[Any]:
    """Every example value in the document: `examples` of a schema (a list) and of a media
    type (a map of {summary, value}), and `example`."""
    found: list[Any] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "examples" and isinstance(value, list):
                found += value
            elif key == "examples" and isinstance(value, dict):
                found += [example["value"] for example in value.values()]
            elif key == "example":
                found.append(value)
            else:
                found += _examples(value)
    elif isinstance(node, list):
        for value in node:
            found += _examples(value)
    return found


def _integers(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _integers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _integers(item)]
    return []


def _unbounded_integers(name: str, node: Any) -> list[str]:
    """Integer properties whose only sample is their bound: a page or a generator then shows
    2^63-1 (printed 9223372036854776000) for a version or an id. A schema's own examples
    stand for everything inside it."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("examples"):
            return []
        if node.get("type") == "integer" and node.get("maximum", 0) > 2**53:
            found.append(name)
        for key, value in node.items():
            found += _unbounded_integers(f"{name}.{key}", value)
    elif isinstance(node, list):
        for value in node:
            found += _unbounded_integers(name, value)
    return found


def test_examples_are_plausible_and_valid(document: dict[str, Any]) -> None:
    examples = _examples(document)
    assert len(examples) > 50
    numbers = [n for example in examples for n in _integers(example)]
    assert numbers
    assert [n for n in numbers if not 0 <= n < 2**31] == []
    schemas = document["components"]["schemas"]
    assert _unbounded_integers("schemas", schemas) == []
    # A body's examples are bodies the server takes or gives: each one validates against
    # its model (the nulls included, which FastAPI's own writing of the document drops).
    checked = 0
    for name, schema in schemas.items():
        model = Problem if name == "Problem" else getattr(bodies, name, None)
        assert model is not None or name == "ValidationIssue", name
        for example in schema.get("examples", []):
            if isinstance(model, type) and issubclass(model, BaseModel):
                model.model_validate(example)
                checked += 1
    assert checked >= 10
    send = document["paths"]["/messages"]["post"]["responses"]["201"]["content"]
    # The send's answer, as the issue saw it: a version of a real size, the nulls kept.
    [sent] = schemas[send["application/json"]["schema"]["$ref"].rpartition("/")[2]]["examples"]
    assert (sent["version"], sent["message"]["id"], sent["message"]["recalled_at"]) == (7, 42, None)
