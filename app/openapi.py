"""The OpenAPI document as the contract: every error an operation can answer, as problem+json.

A route lists the codes of its own errors::

    @router.post("/messages/{message_id}/recall",
                 responses=problem_responses("unauthorized", "not_sender", ...))

and `install_openapi` adds those any operation can answer: 500 `internal_error` and 503
`database_unavailable` everywhere; 422 `validation_error` wherever there is a parameter or
a body (in place of FastAPI's own `HTTPValidationError`, which is not what the service
answers); 400 `bad_request` and 413 `request_too_large` wherever there is a body. It also
fills in the bounds that are settings (`x-from-settings` in a schema), so the document
served states the limits of the server serving it.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from app import schemas as bodies
from app.config import Settings
from app.errors import CODES
from app.problems import PROBLEM_JSON, Problem
from app.schemas import MAX_ID

__all__ = ["TAGS", "install_openapi", "problem_responses"]

# The operations grouped by what a client does with them, in the order a newcomer meets
# them: /docs, /redoc and generated clients (one module per tag) follow it.
TAGS: list[dict[str, str]] = [
    {
        "name": "accounts",
        "description": "Create an account, tell whether one exists; change its password.",
    },
    {
        "name": "devices",
        "description": "Log in (each login is a new device with its own token and ack "
        "cursor), log out, list the devices and log out a lost one.",
    },
    {"name": "messages", "description": "Send a message; recall one."},
    {
        "name": "sync",
        "description": "Fetch the changes after a version (waiting for one if asked) and "
        "acknowledge them: the offline sync loop.",
    },
    {
        "name": "conversations",
        "description": "The conversation list, a conversation's history, read receipts.",
    },
    {
        "name": "groups",
        "description": "Group conversations: create, members and roles, messages, the "
        "group log, read cursors.",
    },
    {"name": "push", "description": "Register the device with a push gateway."},
    {"name": "health", "description": "Probes for a load balancer or an orchestrator."},
    {"name": "operations", "description": "For the operator: the server's metrics."},
]

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"

_WWW_AUTHENTICATE = {
    "description": "`Bearer`: authenticate with a token from `POST /login`.",
    "schema": {"type": "string"},
    "required": True,
}


def problem_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for the problems a route can answer, grouped by status: each
    status documents its codes (in the description and one example per code). A code must
    be in app.errors.CODES."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        _add_code(responses, code)
    return responses


def _add_code(responses: dict[Any, dict[str, Any]], code: str, key: Any = None) -> None:
    entry = CODES[code]  # a KeyError here: the code is missing from app.errors.CODES
    if entry.status == 0:
        raise ValueError(f"{code} has no fixed status: it cannot document an operation")
    key = entry.status if key is None else key
    response = responses.setdefault(key, {})
    content = response.setdefault("content", {}).setdefault(PROBLEM_JSON, {})
    content["schema"] = _PROBLEM_REF
    examples: dict[str, Any] = content.setdefault("examples", {})
    examples[code] = {"summary": entry.meaning, "value": _example(code)}
    response["description"] = "Problem details; `code` is one of:\n\n" + "\n".join(
        f"- `{name}`: {example['summary']}" for name, example in examples.items()
    )
    headers: dict[str, Any] = response.setdefault("headers", {})
    if entry.status == 401:
        headers["WWW-Authenticate"] = _WWW_AUTHENTICATE
    retrying = [CODES[name].retry_after for name in examples]
    if any(retrying):
        headers["Retry-After"] = {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer", "minimum": 0},
            # Required only when every code under this status carries it.
            "required": all(retrying),
        }
    if not headers:
        del response["headers"]


def _example(code: str) -> dict[str, Any]:
    entry = CODES[code]
    example: dict[str, Any] = {
        "type": f"https://msgsync.dev/problems/{code.replace('_', '-')}",
        "title": HTTPStatus(entry.status).phrase,  # as app.problems.problem writes it
        "status": entry.status,
        "detail": entry.meaning,
        "code": code,
    }
    if code in {"since_ahead", "history_rewritten", "ack_ahead"}:
        example["latest_version"] = 1
    if code == "validation_error":
        example["errors"] = [
            {
                "loc": ["body", "version"],
                "msg": "Input should be a valid integer",
                "type": "int_type",
            }
        ]
    return example


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the document that FastAPI generates, completed as described above."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for operation in _operations(document):
        for parameter in operation.get("parameters", []):
            parameter["schema"] = _not_null(parameter["schema"])
        responses: dict[str, Any] = operation.setdefault("responses", {})
        if _FASTAPI_422 in str(responses.get("422")):
            del responses["422"]
        codes = ["internal_error", "database_unavailable"]
        if operation.get("parameters") or "requestBody" in operation:
            codes.append("validation_error")
        if "requestBody" in operation:
            codes += ["bad_request", "request_too_large"]
            operation["requestBody"]["description"] = (
                f"JSON, at most {settings.max_request_bytes} bytes "
                "(MSGSYNC_MAX_REQUEST_BYTES; more is 413 `request_too_large`)."
            )
            operation["requestBody"]["x-max-bytes"] = settings.max_request_bytes
        for code in codes:
            _add_code(responses, code, key=str(CODES[code].status))
        # JSON object keys are strings; FastAPI may leave a route's int keys beside them.
        operation["responses"] = {str(k): v for k, v in sorted(responses.items(), key=str)}
    if _FASTAPI_422 not in str(document):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    _model_examples(schemas)
    _fill_settings(document, settings)
    _allowed_gateways(schemas, settings)
    _exact_bounds(document)
    info = document.setdefault("info", {})
    info["description"] = (info.get("description") or "") + _catalogue()
    return document


def _operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path in document.get("paths", {}).values():
        for method, operation in path.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options"}:
                yield operation


def _model_examples(schemas: dict[str, Any]) -> None:
    """The bodies' examples as written in their models. FastAPI writes the document without
    null values, examples included: a message example lost its `"recalled_at": null`, and
    was no longer a valid message."""
    for name, schema in schemas.items():
        model = getattr(bodies, name, None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            extra = model.model_config.get("json_schema_extra")
            if isinstance(extra, dict) and "examples" in extra:
                schema["examples"] = extra["examples"]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without FastAPI's `anyOf: [..., {"type": "null"}]` for an
    optional one: a query string cannot carry a null, only leave the parameter out."""
    options = [s for s in schema.get("anyOf", []) if s != {"type": "null"}]
    if len(options) != 1 or len(schema["anyOf"]) != 2:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**options[0], **rest}


def _fill_settings(node: Any, settings: Settings) -> None:
    """Replace each `"x-from-settings": {"maximum": "sync_max_limit"}` by `"maximum": 1000`
    (the setting's value in this server)."""
    if isinstance(node, dict):
        wanted = node.pop("x-from-settings", None)
        if wanted:
            for keyword, setting in wanted.items():
                node[keyword] = getattr(settings, setting)
        for value in node.values():
            _fill_settings(value, settings)
    elif isinstance(node, list):
        for value in node:
            _fill_settings(value, settings)


def _allowed_gateways(schemas: dict[str, Any], settings: Settings) -> None:
    """The operator's allowlist (MSGSYNC_PUSH_GATEWAYS) as the gateway URL's pattern, so that
    a client (or a fuzzer) knows which URLs this server takes. With push off none is
    taken: the description says so, and registration answers 422 gateway_not_allowed."""
    prefixes = [p.strip() for p in settings.push_gateways.split(",") if p.strip()]
    field = schemas.get("PusherIn", {}).get("properties", {}).get("gateway_url")
    if field is None:
        return
    if prefixes:
        # One of the prefixes, then path segments below it (app.push.gateway_urls): a segment
        # cannot start with a dot (no dot segments) and nothing may be percent-encoded,
        # a backslash, a fragment or userinfo. The server accepts a little more (other
        # letter cases, an explicit default port, encodings other than of separators).
        segment = r"[^\x00-\x20\x7f\\#%/?@.][^\x00-\x20\x7f\\#%/?@]*"
        field["pattern"] = (
            "^("
            + "|".join(
                _literal(p)
                + (f"({segment}(/{segment})*/?)?" if p.endswith("/") else f"(/{segment})*/?")
                for p in prefixes
            )
            + ")$"
        )
    else:
        field["description"] += " Push is off on this server: every URL is refused."


def _literal(text: str) -> str:
    """text as a regular expression matching itself, in the syntax JSON Schema and Python
    share (Python's re.escape escapes characters that ECMAScript rejects escaped)."""
    return "".join("\\" + c if c in r".^$*+?()[]{}|\/" else c for c in text)


def _exact_bounds(node: Any) -> None:
    """FastAPI's document model holds `minimum`/`maximum` as floats, which turns the BIGINT
    bound 2^63-1 into 2^63 (9.223372036854776e18); a client generator or a fuzzer reading it
    then takes values past the bound for valid. Integer bounds are written back as
    integers, that one exactly."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for keyword in ("minimum", "maximum"):
                value = node.get(keyword)
                if isinstance(value, float) and value.is_integer():
                    node[keyword] = MAX_ID if value == float(MAX_ID) else int(value)
        for value in node.values():
            _exact_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exact_bounds(value)


def _catalogue() -> str:
    rows = "\n".join(
        f"| `{code}` | {entry.status or 'any'} | {entry.meaning} |" for code, entry in CODES.items()
    )
    return (
        "\n\nErrors are RFC 9457 problem details (`application/problem+json`) whose `code` "
        "is stable. Each operation lists the codes it can answer; every code:\n\n"
        "| code | status | meaning |\n| --- | --- | --- |\n" + rows + "\n"
    )
