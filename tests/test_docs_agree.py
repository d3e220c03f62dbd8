"""The error codes agree everywhere: the code base, app.errors.CODES, the OpenAPI document
and docs/protocol.md. A code raised but undocumented, or documented but never raised, fails."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.errors import CODES
from app.main import create_app
from app.problems import _HTTP_CODES, PROBLEM_JSON

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
# AppError(404, "message_not_found", ...) and problem(413, "request_too_large", ...), over
# several lines or one.
_RAISED = re.compile(r"\b(?:AppError|problem)\(\s*(\d{3}),\s*\"([a-z_]+)\"", re.S)
_FALLBACK = re.compile(r"_HTTP_CODES\.get\([^)]*\"([a-z_]+)\"\)")


def raised_codes() -> dict[str, set[int]]:
    """Every code the code base can answer, with the statuses it is raised with."""
    found: dict[str, set[int]] = {}
    for path in APP.rglob("*.py"):
        text = path.read_text()
        for status, code in _RAISED.findall(text):
            found.setdefault(code, set()).add(int(status))
        for code in _FALLBACK.findall(text):
            found.setdefault(code, set())
    for status, code in _HTTP_CODES.items():
        found.setdefault(code, set()).add(status)
    return found


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("openapi") / "msgsync.db"
    doc: dict[str, Any] = create_app(Settings(database_url=f"sqlite:///{path}")).openapi()
    return doc


def operation_codes(document: dict[str, Any]) -> dict[str, set[int]]:
    """The codes the operations document, by the statuses they document them under."""
    found: dict[str, set[int]] = {}
    for path in document["paths"].values():
        for operation in path.values():
            for status, response in operation["responses"].items():
                examples = response.get("content", {}).get(PROBLEM_JSON, {}).get("examples", {})
                for code, example in examples.items():
                    assert example["value"]["code"] == code
                    assert example["value"]["status"] == int(status)
                    found.setdefault(code, set()).add(int(status))
    return found


def test_the_scan_finds_codes() -> None:
    """The scan itself works: it finds codes raised in several modules and ways."""
    found = raised_codes()
    assert {"since_ahead", "request_too_large", "validation_error", "not_found"} <= found.keys()
    assert found["body_too_large"] == {413}


def test_every_raised_code_is_in_the_table_with_its_status() -> None:
    found = raised_codes()
    assert sorted(found.keys() - CODES.keys()) == [], "add these to app.errors.CODES"
    assert sorted(CODES.keys() - found.keys()) == [], "never raised: drop from app.errors.CODES"
    for code, statuses in found.items():
        if CODES[code].status:
            assert statuses <= {CODES[code].status}, (code, statuses)


def test_every_code_is_explained_in_the_protocol_page() -> None:
    page = (ROOT / "docs" / "protocol.md").read_text()
    missing = [code for code in raised_codes() if f"`{code}`" not in page]
    assert missing == [], "explain these in docs/protocol.md"
    # And the page names no code that does not exist: every `snake_case` in its code table.
    table = re.findall(r"^\| `([a-z_]+)` \|", page, re.M)
    assert sorted(set(table) - raised_codes().keys()) == []
    assert sorted(raised_codes().keys() - set(table)) == []


def test_the_openapi_documents_every_code_and_no_other(document: dict[str, Any]) -> None:
    raised = raised_codes()
    documented = operation_codes(document)
    assert sorted(documented.keys() - raised.keys()) == [], "documented but never raised"
    # Every code with a fixed status that a route or handler answers is on an operation;
    # those only the framework answers for any path (an unknown path, a wrong method) are in
    # the document's catalogue only.
    # request_head_too_large is the HTTP server's (app.edge.server), before any path is known.
    framework_only = {
        "not_found",
        "method_not_allowed",
        "forbidden",
        "http_error",
        "request_head_too_large",
    }
    assert sorted(raised.keys() - documented.keys() - framework_only) == []
    for code, statuses in documented.items():
        assert statuses == {CODES[code].status}, code
    catalogue = document["info"]["description"]
    assert [code for code in raised if f"| `{code}` |" not in catalogue] == []
