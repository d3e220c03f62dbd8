"""A client generated from the served OpenAPI document, used as a newcomer would use it.

openapi-python-client builds a typed Python package from the `/openapi.json` of a real
server (once for the module); the tests import that package and register, log in, send,
sync, ack, recall and mark read through its code, against the same server. What they hold
the document to: one module per tag and one function per deliberate operationId, each
sync entry decoded into the type its `kind` names, problems decoded as `Problem`.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from app.schemas import MessageEntry, ReadEntry, RecallEntry, SyncPage
from tests.factories import PASSWORD, new_user_id
from tests.server import running_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

# Not `msgsync_client`: that name is the SDK's, imported by other tests in this process.
PACKAGE = "msgsync_generated"


@dataclass
class Generated:
    """The running server and the package generated from its document."""

    url: str
    output: str  # what the generator printed
    # The generated clients keep a connection pool each: closed at the end of each test.
    clients: ExitStack = field(default_factory=ExitStack)

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.{name}")

    def anonymous(self) -> Any:
        return self.clients.enter_context(self.module("client").Client(base_url=self.url))

    def signed_in(self, user_id: str) -> Any:
        """A new device of `user_id`, logged in through the generated `login`."""
        models = self.module("models")
        device = self.module("api.devices.login").sync(
            client=self.anonymous(),
            body=models.LoginIn(user_id=user_id, password=PASSWORD, device_name="generated"),
        )
        assert isinstance(device, models.LoginOut), device
        return self.clients.enter_context(
            self.module("client").AuthenticatedClient(base_url=self.url, token=device.access_token)
        )

    def new_user(self) -> str:
        models = self.module("models")
        user_id = new_user_id("gen")
        created = self.module("api.accounts.create_user").sync(
            client=self.anonymous(), body=models.UserIn(user_id=user_id, password=PASSWORD)
        )
        assert isinstance(created, models.UserOut), created
        assert created.user_id == user_id
        return user_id


@pytest.fixture
def generated(package: Generated) -> Iterator[Generated]:
    with package.clients:
        yield package


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    tmp = tmp_path_factory.mktemp("generated")
    with running_server(f"sqlite:///{tmp / 'msgsync.db'}") as server:
        document = tmp / "openapi.json"
        document.write_bytes(httpx.get(f"{server.url}/openapi.json").content)
        # No post-hooks: they only reformat the generated code (with ruff) and cost seconds.
        config = tmp / "config.json"
        config.write_text(json.dumps({"post_hooks": []}))
        ran = subprocess.run(
            [
                sys.executable,
                "-m",
                "openapi_python_client",
                "generate",
                "--path",
                str(document),
                "--config",
                str(config),
                "--meta",
                "none",
                "--output-path",
                str(tmp / "src" / PACKAGE),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        output = ran.stdout + ran.stderr
        assert ran.returncode == 0, output
        sys.path.insert(0, str(tmp / "src"))
        try:
            yield Generated(server.url, output)
        finally:
            sys.path.remove(str(tmp / "src"))
            for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
                del sys.modules[name]


def test_the_generator_has_nothing_to_warn_about(generated: Generated) -> None:
    assert "Warning" not in generated.output, generated.output
    # One module per tag, named after the operations' ids (FastAPI's own ids, such as
    # `metrics_metrics_get`, would show here).
    api = Path(generated.module("api").__file__ or "").parent
    modules = {
        f"{tag.name}.{module.stem}"
        for tag in api.iterdir()
        if tag.is_dir() and not tag.name.startswith("__")
        for module in tag.glob("*.py")
        if module.stem != "__init__"
    }
    assert modules == {
        "accounts.create_user",
        "accounts.get_user",
        "accounts.change_password",
        "devices.login",
        "devices.logout",
        "devices.list_devices",
        "devices.delete_device",
        "messages.send_message",
        "messages.recall_message",
        "sync.sync",
        "sync.ack",
        "conversations.list_conversations",
        "conversations.list_messages",
        "conversations.mark_read",
        "push.register_pusher",
        "push.list_pushers",
        "push.delete_pusher",
        "groups.create_group",
        "groups.get_group",
        "groups.rename_group",
        "groups.list_group_events",
        "groups.list_group_members",
        "groups.add_group_members",
        "groups.remove_group_member",
        "groups.set_group_role",
        "groups.send_group_message",
        "groups.mark_group_read",
        "health.get_health",
        "health.get_readiness",
        "operations.get_metrics",
    }


def test_register_login_send_sync_and_ack(generated: Generated) -> None:
    models = generated.module("models")
    alice_id, bob_id = generated.new_user(), generated.new_user()
    alice, bob = generated.signed_in(alice_id), generated.signed_in(bob_id)

    sent = generated.module("api.messages.send_message").sync(
        client=alice, body=models.SendIn(to=bob_id, body="hi bob", client_msg_id="g-1")
    )
    assert isinstance(sent, models.SendOut), sent
    assert (sent.message.from_, sent.message.to, sent.message.body) == (alice_id, bob_id, "hi bob")
    assert sent.version == 1

    sync = generated.module("api.sync.sync")
    page = sync.sync(client=bob, since=0)
    assert isinstance(page, models.SyncPage), page
    assert (page.next_since, page.latest_version, page.has_more) == (1, 1, False)
    [entry] = page.entries
    # Decoded as the type its kind names, with the message typed inside it.
    assert isinstance(entry, models.MessageEntry), entry
    assert entry.kind == "message"
    assert isinstance(entry.data, models.MessageOut)
    assert (entry.data.id, entry.data.body, entry.data.from_) == (
        sent.message.id,
        "hi bob",
        alice_id,
    )

    acked = generated.module("api.sync.ack").sync(
        client=bob, body=models.AckIn(version=page.next_since)
    )
    assert isinstance(acked, models.AckOut), acked
    assert acked.acked_version == page.next_since == 1

    # A problem is decoded too, with its own fields.
    problem = sync.sync(client=bob, since=page.latest_version + 5)
    assert isinstance(problem, models.Problem), problem
    assert (problem.code, problem.status, problem.latest_version) == ("since_ahead", 409, 1)


def test_a_user_is_looked_up_through_the_generated_code(generated: Generated) -> None:
    models = generated.module("models")
    alice_id, bob_id = generated.new_user(), generated.new_user()
    alice = generated.signed_in(alice_id)
    get_user = generated.module("api.accounts.get_user")
    found = get_user.sync(bob_id, client=alice)
    assert isinstance(found, models.UserFound), found
    assert found.user_id == bob_id
    missing = get_user.sync(new_user_id("ghost"), client=alice)
    assert isinstance(missing, models.Problem), missing
    assert (missing.code, missing.status) == ("user_not_found", 404)


def test_each_entry_kind_decodes_into_its_own_type(generated: Generated) -> None:
    """Recall and read entries through the generated code, and the same page's JSON valid
    for the server's own models (the server writes it without them)."""
    models = generated.module("models")
    alice_id, bob_id = generated.new_user(), generated.new_user()
    alice, bob = generated.signed_in(alice_id), generated.signed_in(bob_id)
    sent = generated.module("api.messages.send_message").sync(
        client=alice, body=models.SendIn(to=bob_id, body="oops")
    )
    assert isinstance(sent, models.SendOut), sent
    read = generated.module("api.conversations.mark_read").sync(
        alice_id, client=bob, body=models.ReadIn(up_to_message_id=sent.message.id)
    )
    assert isinstance(read, models.ReadOut), read
    assert read.read_up_to_id == sent.message.id
    recalled = generated.module("api.messages.recall_message").sync(sent.message.id, client=alice)
    assert isinstance(recalled, models.RecallOut), recalled
    assert recalled.message.body == ""

    page = generated.module("api.sync.sync").sync(client=alice, since=0)
    assert isinstance(page, models.SyncPage), page
    assert [type(e).__name__ for e in page.entries] == [
        "MessageEntry",
        "ReadEntry",
        "RecallEntry",
    ]
    message, receipt, recall = page.entries
    assert message.data.id == sent.message.id
    assert (receipt.data.reader, receipt.data.peer) == (bob_id, alice_id)
    assert receipt.data.up_to_message_id == sent.message.id
    assert (recall.data.message_id, recall.data.from_, recall.data.to) == (
        sent.message.id,
        alice_id,
        bob_id,
    )

    token = alice.token
    raw = httpx.get(
        f"{generated.url}/sync",
        params={"since": 0},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert raw.status_code == 200, raw.text
    validated = SyncPage.model_validate_json(raw.content)
    assert [type(e.root) for e in validated.entries] == [MessageEntry, ReadEntry, RecallEntry]
