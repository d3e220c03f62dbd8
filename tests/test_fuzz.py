"""Fuzzing a real server from its own OpenAPI document (schemathesis), and the JSON bodies of
send, ack and login (hypothesis), the latter on PostgreSQL and on SQLite.

The contract under test: every answer is a documented status with a documented content
type and a body matching its schema; every problem's `code` is one its operation documents;
no input at all gets a 5xx. The runs are seeded (deterministic) and bounded by examples.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import schemathesis.engine
from hypothesis import strategies as st
from schemathesis.engine import Status, events

from tests.conftest import migrated_pg_database
from tests.factories import PASSWORD
from tests.server import running_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

PROBLEM_JSON = "application/problem+json"
SEED = 20261127
EXAMPLES = 25  # per operation and generation mode; the whole module stays under ~2 minutes


class Target:
    """A running server, its OpenAPI document and a signed-in device. (Not a dataclass:
    hypothesis prints a dataclass argument field by field, the whole document too.)"""

    def __init__(self, url: str, document: dict[str, Any], client: httpx.Client) -> None:
        self.url = url
        self.document = document
        self.client = client
        self.peer = ""
        self.headers: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Target({self.url!r})"

    def new_device(self, user_id: str) -> dict[str, str]:
        response = self.client.post("/login", json={"user_id": user_id, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def new_user(self) -> str:
        user_id = f"f-{uuid.uuid4().hex[:10]}"
        response = self.client.post("/users", json={"user_id": user_id, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return user_id


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    database: AbstractContextManager[str]
    if request.param == "postgresql":
        admin_url: str = request.getfixturevalue("pg_admin_url")
        database = migrated_pg_database(admin_url)
    else:
        path: Path = tmp_path_factory.mktemp("fuzz") / "msgsync.db"
        database = nullcontext(f"sqlite:///{path}")
    # Long-polls end at once: a fuzzer asking for timeout=50 must not stall the run.
    # Push on, towards a local port where nothing listens: registering pushers is fuzzed too,
    # and no push ever leaves this machine.
    env = {"MSGSYNC_MAX_TIMEOUT": "0", "MSGSYNC_PUSH_GATEWAYS": "http://127.0.0.1:9/push/"}
    with (
        database as url,
        running_server(url, env=env) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        document = client.get("/openapi.json").json()
        found = Target(server.url, document, client)
        alice = found.new_user()
        found.peer = found.new_user()
        found.headers = found.new_device(alice)
        # Something to sync, recall and read.
        sent = client.post(
            "/messages", json={"to": found.peer, "body": "hi"}, headers=found.headers
        )
        assert sent.status_code == 201, sent.text
        yield found


def _config(target: Target) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": target.url,
            "generation": {
                "max-examples": EXAMPLES,
                "mode": "all",
                "deterministic": True,
                "database": "none",
            },
            # Every check, as `--checks all`. A body over the byte limit is refused with 413
            # `body_too_large`, as documented: that is a rejection too.
            "checks": {
                "enabled": True,
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 406, 413, 422, 428]
                },
            },
            "phases": {"stateful": {"max-steps": 20}},
            "workers": 1,
        }
    )


def _documented_code(ctx: Any, response: schemathesis.Response, case: Any) -> bool | None:
    """A problem's `code` must be one that its operation documents for that status (the
    schema checks say the body is a Problem; the codes are in the response's examples)."""
    if response.status_code < 400 or case.method.upper() != case.operation.method.upper():
        return None  # a success, or a method the path does not take (405, its own check)
    documented = case.operation.definition.raw["responses"].get(str(response.status_code), {})
    examples = documented.get("content", {}).get(PROBLEM_JSON, {}).get("examples", {})
    code = json.loads(response.content).get("code")
    if code not in examples:
        raise AssertionError(
            f"{case.method} {case.operation.path} answered {response.status_code} {code!r}; "
            f"documented: {sorted(examples)}"
        )
    return True


_documented_code.__name__ = "documented_problem_code"
schemathesis.check(_documented_code)


# On PostgreSQL alone: what it fuzzes is the HTTP contract (parameters, bodies, headers,
# statuses, problems), which does not depend on the store; PostgreSQL is the stricter of
# the two with what it stores (no NUL in text). The hypothesis tests below, which send
# arbitrary text to be stored and read back, run on both.
@pytest.mark.parametrize("target", ["postgresql"], indirect=True)
def test_schemathesis_finds_nothing(target: Target) -> None:
    """Every phase (examples, coverage, fuzzing, stateful along the OpenAPI links) with
    every check; the counts are printed (`pytest -s`)."""
    schema = schemathesis.openapi.from_dict(target.document, config=_config(target))

    @schema.auth(refresh_interval=None)
    class Bearer:
        def get(self, case: Any, ctx: Any) -> str:
            if case.operation.path == "/logout":
                # A logout ends the token it carries: it gets a device of its own.
                return target.new_device(target.peer)["Authorization"]
            return target.headers["Authorization"]

        def set(self, case: Any, data: str, ctx: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": data}

    failures: list[str] = []
    cases = 0
    statuses: Counter[int] = Counter()
    phases: Counter[str] = Counter()
    finished = None
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            cases += len(recorder.cases)
            phases[event.phase.value] += len(recorder.cases)
            for interaction in recorder.interactions.values():
                if interaction.response is not None:
                    statuses[interaction.response.status_code] += 1
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        case = recorder.cases[case_id].value
                        answer = recorder.interactions.get(case_id)
                        failures.append(
                            f"{check.name}: {case.method} {case.formatted_path} "
                            f"{case.query or ''} {case.body!r:.200}: "
                            f"{check.failure_info.failure.title}: "
                            + (
                                f"{answer.response.status_code} {answer.response.content!r:.300}"
                                if answer is not None and answer.response is not None
                                else ""
                            )
                        )
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(f"error: {event!r}")
        elif isinstance(event, events.EngineFinished):
            finished = event
            failures += [f"after run: {f.title}" for f in event.failures]
    assert finished is not None
    print(
        f"\nschemathesis: {cases} cases, {sum(statuses.values())} requests in "
        f"{finished.running_time:.1f} s, by phase {dict(phases)}, "
        f"by status {dict(sorted(statuses.items()))}, "
        f"{len(failures)} failures"
    )
    assert not failures, "\n".join(sorted(set(failures)))


# The JSON bodies of send, ack and login, by hypothesis: hostile bodies are refused with a
# problem, valid ones are accepted, and nothing gets a 5xx.

_HOSTILE_TEXT = st.text(st.characters(exclude_categories=[]), max_size=40) | st.sampled_from(
    ["a\x00b", "\x00", "", " " * 70, "x" * 200]
)
_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _HOSTILE_TEXT
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_HOSTILE_TEXT, inner, max_size=3),
    max_leaves=6,
)


def _raw(value: Any) -> bytes:
    """JSON as a client might write it: lone surrogates escaped, as a JSON encoder does."""
    return json.dumps(value).encode()


def _answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM_JSON, response.text
        assert response.json()["code"]


_SETTINGS = hypothesis.settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def _clean_text(max_size: int) -> st.SearchStrategy[str]:
    # Any character but NUL and surrogates (which the contract refuses).
    return st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=max_size
    )


@_SETTINGS
@hypothesis.given(
    body=st.fixed_dictionaries(
        {},
        optional={"to": _JSON, "body": _JSON, "client_msg_id": _JSON, "extra": _JSON},
    )
    | _JSON
)
def test_send_bodies_never_fail_the_server(target: Target, body: Any) -> None:
    response = target.client.post(
        "/messages",
        content=_raw(body),
        headers={**target.headers, "Content-Type": "application/json"},
    )
    _answered(response)


@_SETTINGS
@hypothesis.given(text=_clean_text(200), key=st.none() | _clean_text(128).filter(bool))
def test_valid_sends_are_accepted(target: Target, text: str, key: str | None) -> None:
    body: dict[str, Any] = {"to": target.peer, "body": text}
    if key is not None:
        body["client_msg_id"] = f"{uuid.uuid4().hex}{key}"[:128]
    response = target.client.post(
        "/messages",
        content=_raw(body),
        headers={**target.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["message"]["body"] == text


@_SETTINGS
@hypothesis.given(body=st.fixed_dictionaries({}, optional={"version": _JSON}) | _JSON)
def test_ack_bodies_never_fail_the_server(target: Target, body: Any) -> None:
    response = target.client.post(
        "/ack", content=_raw(body), headers={**target.headers, "Content-Type": "application/json"}
    )
    _answered(response)
    version = body.get("version") if isinstance(body, dict) and len(body) == 1 else None
    if type(version) is int and 0 <= version <= 1:
        # Every user here has version 1 at least (the fixture's message): acceptable.
        assert response.status_code == 200, response.text


@_SETTINGS
@hypothesis.given(
    body=st.fixed_dictionaries(
        {}, optional={"user_id": _JSON, "password": _JSON, "device_name": _JSON}
    )
    | _JSON
)
def test_login_bodies_never_fail_the_server(target: Target, body: Any) -> None:
    response = target.client.post(
        "/login", content=_raw(body), headers={"Content-Type": "application/json"}
    )
    _answered(response)
    assert response.status_code != 201, "no generated body knows a password"


@_SETTINGS
@hypothesis.given(name=_clean_text(128))
def test_valid_logins_are_accepted(target: Target, name: str) -> None:
    response = target.client.post(
        "/login", json={"user_id": target.peer, "password": PASSWORD, "device_name": name}
    )
    assert response.status_code == 201, response.text
