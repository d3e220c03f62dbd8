"""Groups (DESIGN.md "Groups") through the HTTP API, on PostgreSQL and SQLite."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import Device, register, send, sync_all


async def _create(
    client: httpx.AsyncClient, owner: Device, members: list[Device], **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/groups",
        json={"title": "Team", "members": [m.user_id for m in members], **extra},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _say(
    client: httpx.AsyncClient, who: Device, group_id: str, text: str, **extra: Any
) -> Any:
    response = await client.post(
        f"/groups/{group_id}/messages", json={"body": text, **extra}, headers=who.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _events(client: httpx.AsyncClient, who: Device, group_id: str, **params: Any) -> Any:
    response = await client.get(f"/groups/{group_id}/events", params=params, headers=who.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_create_send_and_every_member_syncs_it(client: httpx.AsyncClient) -> None:
    alice, bob, carol = [await register(client, p) for p in ("alice", "bob", "carol")]
    created = await _create(client, alice, [bob, carol])
    group = created["group"]
    assert group["owner"] == alice.user_id
    assert group["member_count"] == 3
    assert group["latest_seq"] == 1
    assert group["joined_seq"] == 1
    assert not group["large"]
    sent = await _say(client, bob, group["group_id"], "hello all")
    message = sent["message"]
    assert message["to"] is None
    assert message["group_id"] == group["group_id"]
    assert message["seq"] == 2
    assert message["from"] == bob.user_id
    for member in (alice, bob, carol):
        entries = await sync_all(client, member)
        kinds = [e["kind"] for e in entries]
        assert kinds == ["group", "message"], kinds
        assert entries[0]["data"]["event"]["kind"] == "created"
        assert entries[0]["data"]["group_id"] == group["group_id"]
        assert entries[1]["data"]["id"] == message["id"]
        assert entries[1]["data"]["body"] == "hello all"
    log = await _events(client, carol, group["group_id"])
    assert [e["seq"] for e in log["events"]] == [1, 2]
    assert [e["kind"] for e in log["events"]] == ["created", "message"]
    assert log["events"][1]["data"]["id"] == message["id"]
    assert log["latest_seq"] == 2
    assert not log["has_more"]


async def test_idempotent_create_and_send(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    first = await _create(client, alice, [bob], client_group_id="g-1")
    again = await client.post(
        "/groups",
        json={"title": "Team", "members": [bob.user_id], "client_group_id": "g-1"},
        headers=alice.headers,
    )
    assert again.status_code == 200
    assert again.json()["group"]["group_id"] == first["group"]["group_id"]
    group_id = first["group"]["group_id"]
    sent = await _say(client, alice, group_id, "once", client_msg_id="m-1")
    retry = await client.post(
        f"/groups/{group_id}/messages",
        json={"body": "once", "client_msg_id": "m-1"},
        headers=alice.headers,
    )
    assert retry.status_code == 200
    assert retry.json() == sent
    entries = await sync_all(client, bob)
    assert [e["kind"] for e in entries].count("message") == 1


async def test_errors_have_codes(client: httpx.AsyncClient) -> None:
    alice, bob, eve = [await register(client, p) for p in ("alice", "bob", "eve")]
    missing = await client.post(
        "/groups", json={"title": "T", "members": ["nobody-here"]}, headers=alice.headers
    )
    assert missing.status_code == 404
    assert missing.json()["code"] == "user_not_found"
    group_id = (await _create(client, alice, [bob]))["group"]["group_id"]
    for method, path, body in [
        ("GET", f"/groups/{group_id}", None),
        ("GET", f"/groups/{group_id}/events", None),
        ("POST", f"/groups/{group_id}/messages", {"body": "hi"}),
        ("POST", f"/groups/{group_id}/read", {"up_to_seq": 1}),
        ("GET", "/groups/no-such-group", None),
    ]:
        response = await client.request(method, path, json=body, headers=eve.headers)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == "group_not_found"
    renamed = await client.patch(f"/groups/{group_id}", json={"title": "x"}, headers=bob.headers)
    assert renamed.status_code == 403
    assert renamed.json()["code"] == "not_group_admin"
    added = await client.post(
        f"/groups/{group_id}/members", json={"user_ids": [eve.user_id]}, headers=bob.headers
    )
    assert added.status_code == 403
    assert added.json()["code"] == "not_group_admin"
    kicked = await client.delete(f"/groups/{group_id}/members/{alice.user_id}", headers=bob.headers)
    assert kicked.status_code == 403
    assert kicked.json()["code"] == "not_group_admin"
    role = await client.patch(
        f"/groups/{group_id}/members/{bob.user_id}", json={"role": "admin"}, headers=bob.headers
    )
    assert role.status_code == 403
    assert role.json()["code"] == "not_group_admin"


async def test_group_too_large(database_url: str, tmp_path: Any) -> None:
    from app.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(database_url, group_max_members=3)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            users = [await register(client, "big") for _ in range(5)]
            too_many = await client.post(
                "/groups",
                json={"title": "T", "members": [u.user_id for u in users[1:]]},
                headers=users[0].headers,
            )
            assert too_many.status_code == 409
            assert too_many.json()["code"] == "group_too_large"
            group_id = (await _create(client, users[0], users[1:3]))["group"]["group_id"]
            more = await client.post(
                f"/groups/{group_id}/members",
                json={"user_ids": [users[3].user_id]},
                headers=users[0].headers,
            )
            assert more.status_code == 409
            assert more.json()["code"] == "group_too_large"


async def test_joined_seq_hides_history_and_removed_member_gets_nothing(
    client: httpx.AsyncClient,
) -> None:
    alice, bob, carol = [await register(client, p) for p in ("alice", "bob", "carol")]
    group_id = (await _create(client, alice, [bob]))["group"]["group_id"]
    await _say(client, alice, group_id, "before carol")
    added = await client.post(
        f"/groups/{group_id}/members",
        json={"user_ids": [carol.user_id, bob.user_id]},  # bob is in already: ignored
        headers=alice.headers,
    )
    assert added.status_code == 200, added.text
    assert added.json()["group"]["member_count"] == 3
    await _say(client, bob, group_id, "after carol")
    log = await _events(client, carol, group_id)
    assert [e["kind"] for e in log["events"]] == ["member_added", "message"]
    assert log["events"][0]["seq"] == 3
    early = await _events(client, carol, group_id, after_seq=0)
    assert [e["seq"] for e in early["events"]] == [3, 4]
    view = (await client.get(f"/groups/{group_id}", headers=carol.headers)).json()["group"]
    assert view["joined_seq"] == 3
    carol_stream = await sync_all(client, carol)
    assert [e["kind"] for e in carol_stream] == ["group", "message"]
    assert carol_stream[0]["data"]["event"]["data"] == {"user_id": carol.user_id}

    # Removed: the event reaches carol, then nothing more, and the group is gone for her.
    removed = await client.delete(
        f"/groups/{group_id}/members/{carol.user_id}", headers=alice.headers
    )
    assert removed.status_code == 204
    await _say(client, alice, group_id, "without carol")
    carol_stream = await sync_all(client, carol)
    assert [e["kind"] for e in carol_stream] == ["group", "message", "group"]
    assert carol_stream[-1]["data"]["event"]["kind"] == "member_removed"
    gone = await client.get(f"/groups/{group_id}", headers=carol.headers)
    assert gone.status_code == 404
    assert gone.json()["code"] == "group_not_found"
    members = (await client.get(f"/groups/{group_id}/members", headers=alice.headers)).json()
    assert sorted(m["user_id"] for m in members["members"]) == sorted([alice.user_id, bob.user_id])


async def test_owner_leaves_longest_standing_admin_takes_over(client: httpx.AsyncClient) -> None:
    alice, bob, carol, dave = [await register(client, p) for p in ("a", "b", "c", "d")]
    group_id = (await _create(client, alice, [bob]))["group"]["group_id"]
    await client.post(
        f"/groups/{group_id}/members",
        json={"user_ids": [carol.user_id, dave.user_id]},
        headers=alice.headers,
    )
    for user in (dave, carol):  # dave made admin first, but carol joined before him
        response = await client.patch(
            f"/groups/{group_id}/members/{user.user_id}",
            json={"role": "admin"},
            headers=alice.headers,
        )
        assert response.status_code == 200
        assert response.json()["role"] == "admin"
    left = await client.delete(f"/groups/{group_id}/members/{alice.user_id}", headers=alice.headers)
    assert left.status_code == 204
    view = (await client.get(f"/groups/{group_id}", headers=bob.headers)).json()["group"]
    joined = {
        m["user_id"]: m
        for m in (await client.get(f"/groups/{group_id}/members", headers=bob.headers)).json()[
            "members"
        ]
    }
    # carol and dave were added by one request, in user-id order: the earlier seq wins.
    expected = min((carol.user_id, dave.user_id), key=lambda u: joined[u]["joined_seq"])
    assert view["owner"] == expected
    assert joined[expected]["role"] == "owner"
    log = await _events(client, bob, group_id)
    assert [e["kind"] for e in log["events"][-2:]] == ["member_left", "role_changed"]
    assert log["events"][-1]["data"] == {"user_id": expected, "role": "owner"}
    assert (await client.get(f"/groups/{group_id}", headers=alice.headers)).status_code == 404


async def test_read_cursor_and_unread_counts_in_conversations(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    group_id = (await _create(client, alice, [bob]))["group"]["group_id"]
    await send(client, alice, bob.user_id, "direct first")
    for i in range(3):
        await _say(client, alice, group_id, f"g{i}")
    await _say(client, bob, group_id, "mine")
    await send(client, bob, alice.user_id, "direct newest")
    page = (await client.get("/conversations", headers=bob.headers)).json()
    kinds = [c["kind"] for c in page["conversations"]]
    assert kinds == ["direct", "group"]
    group = page["conversations"][1]
    assert group["group_id"] == group_id
    assert group["title"] == "Team"
    assert group["unread_count"] == 3  # alice's three; bob's own not counted
    assert group["last_message"]["body"] == "mine"
    # Paging one at a time gives the same order.
    first = (await client.get("/conversations", params={"limit": 1}, headers=bob.headers)).json()
    assert first["conversations"][0]["kind"] == "direct"
    assert first["next_before"]
    second = (
        await client.get(
            "/conversations",
            params={"limit": 1, "before": first["next_before"]},
            headers=bob.headers,
        )
    ).json()
    assert second["conversations"][0]["group_id"] == group_id
    assert second["next_before"] is None

    before = len(await sync_all(client, alice))
    read = await client.post(f"/groups/{group_id}/read", json={"up_to_seq": 3}, headers=bob.headers)
    assert read.status_code == 200
    assert read.json()["read_seq"] == 3
    back = await client.post(f"/groups/{group_id}/read", json={"up_to_seq": 2}, headers=bob.headers)
    assert back.json()["read_seq"] == 3  # never back
    page = (await client.get("/conversations", headers=bob.headers)).json()
    assert page["conversations"][1]["unread_count"] == 1  # g2 (seq 4) only
    bob_stream = await sync_all(client, bob)
    assert bob_stream[-1]["kind"] == "read"
    assert bob_stream[-1]["data"] == {"reader": bob.user_id, "group_id": group_id, "up_to_seq": 3}
    # The read entry is for the reader's own devices only.
    assert len(await sync_all(client, alice)) == before


async def test_recall_of_a_group_message(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    group_id = (await _create(client, alice, [bob]))["group"]["group_id"]
    message = (await _say(client, alice, group_id, "oops"))["message"]
    not_mine = await client.post(f"/messages/{message['id']}/recall", headers=bob.headers)
    assert not_mine.status_code == 403
    assert not_mine.json()["code"] == "not_sender"
    recalled = await client.post(f"/messages/{message['id']}/recall", headers=alice.headers)
    assert recalled.status_code == 200, recalled.text
    assert recalled.json()["message"]["body"] == ""
    assert recalled.json()["message"]["recalled_at"]
    again = await client.post(f"/messages/{message['id']}/recall", headers=alice.headers)
    assert again.status_code == 200
    stream = await sync_all(client, bob)
    assert [e["kind"] for e in stream] == ["group", "message", "recall"]
    assert stream[-1]["data"]["group_id"] == group_id
    assert stream[-1]["data"]["message_id"] == message["id"]
    log = await _events(client, bob, group_id)
    assert [e["kind"] for e in log["events"]] == ["created", "message", "recall"]
    assert log["events"][1]["data"]["body"] == ""
    # Direct history and the direct fallback never see the group's message.
    history = await client.get(f"/conversations/{alice.user_id}/messages", headers=bob.headers)
    assert history.json()["messages"] == []


async def test_title_and_role_events_reach_members(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    group_id = (await _create(client, alice, [bob]))["group"]["group_id"]
    renamed = await client.patch(
        f"/groups/{group_id}", json={"title": "New"}, headers=alice.headers
    )
    assert renamed.status_code == 200
    assert renamed.json()["group"]["title"] == "New"
    await client.patch(
        f"/groups/{group_id}/members/{bob.user_id}", json={"role": "admin"}, headers=alice.headers
    )
    stream = await sync_all(client, bob)
    events = [e["data"]["event"] for e in stream if e["kind"] == "group"]
    assert [(e["kind"], e["data"]) for e in events[1:]] == [
        ("title_changed", {"title": "New"}),
        ("role_changed", {"user_id": bob.user_id, "role": "admin"}),
    ]
    assert [e["seq"] for e in events] == [1, 2, 3]


async def test_members_page_by_user_id(client: httpx.AsyncClient) -> None:
    owner = await register(client, "owner")
    others = [await register(client, "m") for _ in range(4)]
    group_id = (await _create(client, owner, others))["group"]["group_id"]
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = (
            await client.get(f"/groups/{group_id}/members", params=params, headers=owner.headers)
        ).json()
        seen += [m["user_id"] for m in page["members"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted([owner.user_id, *(o.user_id for o in others)])


async def test_a_client_msg_id_is_one_send_whether_direct_or_group(
    client: httpx.AsyncClient,
) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    group_id = (await _create(client, alice, [bob]))["group"]["group_id"]
    await _say(client, alice, group_id, "group", client_msg_id="k1")
    direct = await client.post(
        "/messages",
        json={"to": bob.user_id, "body": "x", "client_msg_id": "k1"},
        headers=alice.headers,
    )
    assert direct.status_code == 409
    assert direct.json()["code"] == "client_msg_id_taken"
    await send(client, alice, bob.user_id, "direct", client_msg_id="k2")
    grouped = await client.post(
        f"/groups/{group_id}/messages",
        json={"body": "x", "client_msg_id": "k2"},
        headers=alice.headers,
    )
    assert grouped.status_code == 409
    assert grouped.json()["code"] == "client_msg_id_taken"
