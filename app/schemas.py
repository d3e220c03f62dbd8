"""Request and response bodies of the HTTP API: the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, StringConstraints
from pydantic_core import PydanticCustomError

__all__ = [
    "ENTRY_ID_PATTERN",
    "MAX_ID",
    "NO_NUL",
    "USER_ID_PATTERN",
    "AckIn",
    "AckOut",
    "ConversationOut",
    "ConversationsPage",
    "DeviceDeleteIn",
    "DeviceOut",
    "DevicesOut",
    "Entry",
    "GroupBody",
    "GroupCreated",
    "GroupEntry",
    "GroupEntryData",
    "GroupEventOut",
    "GroupEventsPage",
    "GroupIn",
    "GroupNewsData",
    "GroupNewsEntry",
    "GroupOut",
    "GroupReadIn",
    "GroupReadOut",
    "GroupSendIn",
    "GroupTitleIn",
    "HistoryPage",
    "LoginIn",
    "LoginOut",
    "MemberOut",
    "MembersIn",
    "MembersPage",
    "MessageEntry",
    "MessageOut",
    "PasswordChangeIn",
    "PusherCreated",
    "PusherIn",
    "PusherOut",
    "PushersOut",
    "ReadData",
    "ReadEntry",
    "ReadIn",
    "ReadOut",
    "RecallData",
    "RecallEntry",
    "RecallOut",
    "RoleIn",
    "RoleOut",
    "SendIn",
    "SendOut",
    "Status",
    "SyncPage",
    "SyncQuery",
    "Text",
    "UserFound",
    "UserIn",
    "UserOut",
]

# Ids and versions are PostgreSQL BIGINTs: a larger value must be a 422, not a driver error.
MAX_ID = 2**63 - 1

# PostgreSQL cannot store NUL in text, and no driver can encode a lone UTF-16 surrogate (the
# JSON escape "\ud800" decodes to one): both must be refused at validation, on every backend,
# before any statement runs. The pattern refuses NUL and says so in the schema; pydantic
# matches a pattern on the UTF-8 form of the string, which a lone surrogate does not have,
# so it refuses those too (error type `string_unicode`), in the route and in app.edge.hotpaths
# alike (tests/test_validation.py holds it to that).
NO_NUL = r"^[^\x00]*$"
# The longest group id a path may carry (the route's parameter, and the edge's check of it).
GROUP_ID_MAX_LENGTH = 64
_CLEAN = " Must not contain NUL (U+0000) or unpaired UTF-16 surrogates."

Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
# What registration accepts as a user id; also the bound of GET /users/{user_id}, so that an
# id no account can have is refused as at registration rather than looked up.
USER_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
UserId = Annotated[
    str,
    StringConstraints(pattern=USER_ID_PATTERN),
    Field(
        description="A user id: lower-case letters, digits, `.`, `_`, `-`; 1 to 64.",
        examples=["alice"],
    ),
]
Password = Annotated[
    str,
    StringConstraints(min_length=8, max_length=1024, pattern=NO_NUL),
    Field(description="8 to 1024 characters." + _CLEAN, examples=["wonderland"]),
]


def _json_integer(value: object) -> object:
    """JSON Schema's integer, which the OpenAPI document promises: a number without a
    fractional part (7.0 is one), never a boolean or a string. pydantic's lax mode would take
    `true` as 1 and "7" as 7; its strict mode would refuse 7.0."""
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# Versions and ids in bodies: JSON integers only (`true` is not a version), and a value past
# BIGINT is a 422.
JsonInteger = BeforeValidator(_json_integer)
# Each carries an example of the size a real one has: without one, a documentation page or a
# client generator makes its sample from the bound and shows 2^63-1 (as 9223372036854776000,
# the nearest double) for a version. tests/test_openapi.py holds every integer to that.
Version = Annotated[int, Field(ge=0, le=MAX_ID, examples=[7]), JsonInteger]
MessageId = Annotated[int, Field(ge=1, le=MAX_ID, examples=[42]), JsonInteger]
# Entry ids are opaque to clients; these are the characters the server may use in them.
ENTRY_ID_PATTERN = r"^[A-Za-z0-9_-]+$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(_In):
    """A new account."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"user_id": "alice", "password": "wonderland"}]}
    )

    user_id: UserId
    password: Password


class UserOut(BaseModel):
    """The account that was created."""

    user_id: str = Field(description="The new user's id.", examples=["alice"])


class UserFound(BaseModel):
    """An account that exists."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": "bob"}]})

    user_id: str = Field(description="The user's id, as asked.", examples=["bob"])


class LoginIn(_In):
    """Credentials; every login creates a new device with its own token and ack cursor."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"user_id": "alice", "password": "wonderland", "device_name": "phone"}]
        }
    )

    user_id: Text = Field(max_length=64, description="The user's id." + _CLEAN)
    password: Text = Field(max_length=1024, description="The user's password." + _CLEAN)
    device_name: Text = Field(
        default="",
        max_length=128,
        description="A name for the new device, shown in `GET /devices`." + _CLEAN,
        examples=["phone"],
    )


class LoginOut(BaseModel):
    """The new device and its bearer token."""

    user_id: str = Field(description="The user's id.", examples=["alice"])
    device_id: str = Field(description="The new device's id.", examples=["d-3f9a2c"])
    access_token: str = Field(
        description="Send as `Authorization: Bearer <access_token>` on every other call; "
        "it works until `POST /logout`.",
        examples=["Yx3b0...Q"],
    )


class DeviceOut(BaseModel):
    """One of the user's logged-in devices."""

    device_id: str = Field(description="The device's id.")
    name: str = Field(description="The name given at login.")
    acked_version: Version = Field(description="The device's ack cursor (see `POST /ack`).")
    created_at: datetime = Field(description="When the device logged in.")
    last_seen_at: datetime = Field(
        description="When the device last authenticated (to about a minute)."
    )
    current: bool = Field(default=False, description="True for the device that made this request.")


class DevicesOut(BaseModel):
    """The user's logged-in devices."""

    devices: list[DeviceOut] = Field(description="Every device of the user, the caller's too.")


_MESSAGE_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "from": "alice",
    "to": "bob",
    "body": "hi bob",
    "client_msg_id": "m-1",
    "created_at": "2026-11-27T15:35:00.123456Z",
    "recalled_at": None,
    "group_id": None,
    "seq": None,
}


class MessageOut(BaseModel):
    """A message as stored in the conversation's history."""

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={"examples": [_MESSAGE_EXAMPLE]},
    )

    id: MessageId = Field(description="The message's id, unique across the service.")
    from_: str = Field(alias="from", description="The sender's user id.")
    to: str | None = Field(description="The recipient's user id; null for a group message.")
    body: str = Field(description='The text; `""` once the message is recalled.')
    client_msg_id: str | None = Field(
        description="The sender's idempotency key, if the send carried one."
    )
    created_at: datetime = Field(description="When the message was stored (database clock).")
    recalled_at: datetime | None = Field(description="When the sender recalled it, if so.")
    group_id: str | None = Field(
        default=None, description="The group of a group message; null for a direct one."
    )
    seq: int | None = Field(
        default=None, description="The group event's seq of a group message; null otherwise."
    )


class SendIn(_In):
    """A message to send."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"to": "bob", "body": "hi bob", "client_msg_id": "m-1"}]}
    )

    to: Text = Field(max_length=64, description="The recipient's user id." + _CLEAN)
    # The byte limit (MSGSYNC_MAX_BODY_BYTES, 413 body_too_large) is checked on the UTF-8
    # form; the schema states it as a length, which no larger body can have (app.openapi).
    body: Text = Field(
        description="The text, at most MSGSYNC_MAX_BODY_BYTES bytes of UTF-8 (16 KiB by "
        "default; more is 413 `body_too_large`)." + _CLEAN,
        json_schema_extra={"x-from-settings": {"maxLength": "max_body_bytes"}},
    )
    client_msg_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="An idempotency key chosen by the sender: a retry with the same key "
        "answers 200 with the first result instead of sending again." + _CLEAN,
    )


class SendOut(BaseModel):
    """The stored message and the sender's version that it took."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"message": _MESSAGE_EXAMPLE, "version": 7}]}
    )

    message: MessageOut = Field(description="The message as stored.")
    version: Version = Field(description="The sender's version for this message.")


class RecallOut(BaseModel):
    """The recalled message."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "message": {
                        **_MESSAGE_EXAMPLE,
                        "body": "",
                        "recalled_at": "2026-11-27T15:36:10.000001Z",
                    }
                }
            ]
        }
    )

    message: MessageOut = Field(description='The message, with `body` `""` and `recalled_at`.')


GroupTitle = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
MemberId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
Seq = Annotated[int, Field(ge=0, le=MAX_ID, examples=[12]), JsonInteger]


class GroupIn(_In):
    """A new group."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"title": "Team", "members": ["bob", "carol"], "client_group_id": "g-1"}]
        }
    )

    title: GroupTitle = Field(description="1 to 200 characters." + _CLEAN)
    members: list[MemberId] = Field(
        default_factory=list,
        max_length=100_000,
        description="Members besides the creator (who is the owner).",
    )
    client_group_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="An idempotency key: a retry with the same key answers 200 with the "
        "first group." + _CLEAN,
    )


class GroupOut(BaseModel):
    """A group as the caller sees it."""

    group_id: str = Field(description="The group's id (opaque, at most 64 characters).")
    title: str = Field(description="The title.")
    owner: str | None = Field(description="The owner's user id (null once nobody is left).")
    member_count: int = Field(ge=0, description="How many members.")
    latest_seq: Seq = Field(description="The group's latest event seq.")
    joined_seq: Seq = Field(description="The caller's first visible event.")
    read_seq: Seq = Field(description="The caller's read cursor.")
    large: bool = Field(description="A large group (read from the log); always false yet.")
    created_at: datetime = Field(description="When the group was created.")


class GroupCreated(BaseModel):
    """The new group, and the creator's version for its `created` event."""

    group: GroupOut = Field(description="The group.")
    version: Version = Field(description="The creator's version for the `created` event.")


class GroupBody(BaseModel):
    """A group as the caller sees it."""

    group: GroupOut = Field(description="The group.")


class GroupTitleIn(_In):
    """A new title for the group."""

    title: GroupTitle = Field(description="1 to 200 characters." + _CLEAN)


class MemberOut(BaseModel):
    """A member of a group."""

    user_id: str = Field(description="The member.")
    role: Literal["owner", "admin", "member"] = Field(description="The member's role.")
    joined_seq: Seq = Field(description="The event that added the member.")
    read_seq: Seq = Field(description="The member's read cursor.")


class MembersPage(BaseModel):
    """A page of a group's members, by user id."""

    members: list[MemberOut] = Field(description="By user id.")
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null at the end."
    )


class MembersIn(_In):
    """Users to add to a group."""

    user_ids: list[MemberId] = Field(
        min_length=1, max_length=1000, description="Users to add; members already in are ignored."
    )


class RoleIn(_In):
    """A member's new role."""

    role: Literal["admin", "member"] = Field(description="The new role.")


class RoleOut(BaseModel):
    """A member's role after the change."""

    user_id: str = Field(description="The member.")
    role: Literal["owner", "admin", "member"] = Field(description="The member's role now.")


class GroupSendIn(_In):
    """A message to a group."""

    body: Text = Field(
        description="The text, at most MSGSYNC_MAX_BODY_BYTES bytes of UTF-8 (413 "
        "`body_too_large` above)." + _CLEAN,
        json_schema_extra={"x-from-settings": {"maxLength": "max_body_bytes"}},
    )
    client_msg_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="An idempotency key: a retry with the same key answers 200 with the "
        "first result." + _CLEAN,
    )


class GroupEventOut(BaseModel):
    """One event of the group log."""

    seq: Seq = Field(description="The event's seq in its group.")
    kind: Literal[
        "created",
        "message",
        "recall",
        "member_added",
        "member_removed",
        "member_left",
        "title_changed",
        "role_changed",
    ] = Field(description="What happened.")
    created_at: datetime = Field(description="When.")
    actor: str = Field(description="Who did it.")
    data: dict[str, Any] = Field(description="Depends on `kind` (see the protocol).")


class GroupEventsPage(BaseModel):
    """A page of the group log, ascending seq."""

    events: list[GroupEventOut] = Field(description="Ascending seq.")
    next_after_seq: Seq = Field(description="Pass as `after_seq` for the next page.")
    latest_seq: Seq = Field(description="The group's latest seq.")
    has_more: bool = Field(description="There is more: call again at once.")


class GroupReadIn(_In):
    """Move the caller's read cursor in a group forward."""

    up_to_seq: Seq = Field(description="The newest event read; never moves the cursor back.")


class GroupReadOut(BaseModel):
    """The caller's read cursor in the group after the request."""

    group_id: str = Field(description="The group.")
    read_seq: Seq = Field(description="The cursor now.")
    version: Version = Field(description="The caller's version after (the latest if unmoved).")


class RecallData(BaseModel):
    """A `recall` entry's data: the sender recalled a message."""

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={"examples": [{"message_id": 42, "from": "alice", "to": "bob"}]},
    )

    message_id: MessageId = Field(description="The recalled message.")
    from_: str = Field(alias="from", description="The sender, who recalled it.")
    to: str | None = Field(description="The recipient; null for a group message.")
    group_id: str | None = Field(default=None, description="The group of a group message.")
    seq: int | None = Field(
        default=None,
        description="For a group message: the seq of the recall's event in the group log.",
    )


class ReadData(BaseModel):
    """A `read` entry's data: `reader` has read the conversation with `peer` up to a message."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reader": "bob", "peer": "alice", "up_to_message_id": 42}]}
    )

    reader: str = Field(description="The user who read.")
    peer: str | None = Field(
        default=None, description="The other party of the conversation (direct only)."
    )
    up_to_message_id: MessageId | None = Field(
        default=None, description="The reader's cursor after the change (direct only)."
    )
    group_id: str | None = Field(default=None, description="The group read (groups only).")
    up_to_seq: Seq | None = Field(
        default=None, description="The reader's cursor in the group (groups only)."
    )


class _Entry(BaseModel):
    """The fields every entry has; each kind below narrows `kind` and `data`."""

    version: Version = Field(description="The user's version that the change took.")
    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=ENTRY_ID_PATTERN,
        description="Opaque, unique to this entry write: two different entries never share "
        "one, even across a failover or a restore. Send it back as `since_id` with "
        "`since` = this entry's version.",
        examples=["3f0c9a5e1b7d4c2a8e6f0b1d2c3a4e5f"],
    )
    kind: str
    created_at: datetime = Field(description="When the change was stored.")
    data: Any


class MessageEntry(_Entry):
    """A message sent or received: `data` is the message."""

    kind: Literal["message"] = Field(description="`message`.")
    data: MessageOut = Field(description="The message as stored when the entry was written.")


class RecallEntry(_Entry):
    """A message was recalled by its sender: `data` names it."""

    kind: Literal["recall"] = Field(description="`recall`.")
    data: RecallData = Field(description="The recalled message and its parties.")


class ReadEntry(_Entry):
    """A read cursor moved: `data` says whose, in which conversation, and where to."""

    kind: Literal["read"] = Field(description="`read`.")
    data: ReadData = Field(description="The reader, the conversation and the new cursor.")


# `kind` says what `data` holds: the document states it as a discriminator, so that a
# generated client decodes each entry into its own type. The server writes these bodies
# without this model (app.inbox.sync.render_page writes the stored JSON as it is); the model
# describes that output and validates it in the tests.
class GroupEntryData(BaseModel):
    """A `group` entry's data: the group and one of its events."""

    group_id: str = Field(description="The group.")
    event: GroupEventOut = Field(description="The event (membership, title or role).")


class GroupEntry(_Entry):
    """A membership, title or role event of one of the user's groups."""

    kind: Literal["group"] = Field(description="`group`.")
    data: GroupEntryData = Field(description="The group and its event.")


class GroupNewsData(BaseModel):
    """A `group_news` entry's data: read this group's log."""

    group_id: str = Field(description="The group.")
    seq: Seq = Field(description="The group's latest seq when written.")


class GroupNewsEntry(_Entry):
    """A group has events to read from its log (`GET /groups/{group_id}/events`)."""

    kind: Literal["group_news"] = Field(description="`group_news`.")
    data: GroupNewsData = Field(description="The group and its latest seq.")


class Entry(
    RootModel[
        Annotated[
            MessageEntry | RecallEntry | ReadEntry | GroupEntry | GroupNewsEntry,
            Field(discriminator="kind"),
        ]
    ]
):
    """One change for the user, in version order; `kind` (`message`, `recall`, `read`,
    `group` or `group_news`) says which it is and what `data` holds."""


class SyncPage(BaseModel):
    """A page of the user's changes after `since`, in ascending version."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entries": [
                        {
                            "version": 7,
                            "id": "3f0c9a5e1b7d4c2a8e6f0b1d2c3a4e5f",
                            "kind": "message",
                            "created_at": "2026-11-27T15:35:00.123456Z",
                            "data": _MESSAGE_EXAMPLE,
                        }
                    ],
                    "next_since": 7,
                    "latest_version": 7,
                    "has_more": False,
                    "history_fallback": False,
                }
            ]
        }
    )

    entries: list[Entry] = Field(description="The changes, in ascending version.")
    next_since: Version = Field(
        description="Pass as `since` next time: the last entry's version, or `since` when "
        "the page is empty (or the floor, when the offline store was pruned past `since`)."
    )
    latest_version: Version = Field(description="The user's latest version now.")
    has_more: bool = Field(description="There is more: call again at once with `next_since`.")
    history_fallback: bool = Field(
        description="Some entries came from the message history because the offline store "
        "was pruned past `since`; recall and read entries of the pruned range are not replayed."
    )


class AckIn(_In):
    """A cumulative acknowledgement: everything up to `version` is stored on the device."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"version": 7}]})

    version: Version = Field(
        description="The highest version the device has stored; a JSON integer (0..2^63-1). "
        "The cursor becomes max(cursor, version)."
    )


class AckOut(BaseModel):
    """The device's ack cursor after the ack."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"device_id": "d-3f9a2c", "acked_version": 7}]}
    )

    device_id: str = Field(description="The calling device.")
    acked_version: Version = Field(description="The cursor now; never lower than before.")


class ConversationOut(BaseModel):
    """A conversation (direct or a group), with its newest message."""

    kind: Literal["direct", "group"] = Field(description="`direct` or `group`.")
    peer: str | None = Field(default=None, description="The other party (direct only).")
    group_id: str | None = Field(default=None, description="The group (groups only).")
    title: str | None = Field(default=None, description="The group's title (groups only).")
    last_message: MessageOut = Field(description="The newest message of the conversation.")
    unread_count: int = Field(
        ge=0, description="Messages from others after the caller's read cursor (exact)."
    )


class ConversationsPage(BaseModel):
    """A page of conversations, newest first."""

    conversations: list[ConversationOut] = Field(description="Newest message first.")
    next_before: Annotated[int, Field(ge=1, le=MAX_ID)] | None = Field(
        description="Pass as `before` for the next page; null on the last page.",
        examples=[42],
    )


class HistoryPage(BaseModel):
    """A page of one conversation's messages, newest first."""

    messages: list[MessageOut] = Field(description="Newest first.")
    next_before_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = Field(
        description="Pass as `before_id` for the next page; null on the last page.",
        examples=[42],
    )


class ReadIn(_In):
    """Move the caller's read cursor in a conversation forward."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"up_to_message_id": 42}]})

    up_to_message_id: MessageId = Field(
        description="The newest message read; a JSON integer. A value at or below the "
        "current cursor changes nothing."
    )


class ReadOut(BaseModel):
    """The read cursor after the request."""

    peer: str = Field(description="The other party.")
    # The cursor after the request: never lower than before, whatever up_to_message_id was.
    read_up_to_id: Annotated[int, Field(ge=0, le=MAX_ID)] = Field(
        description="The cursor now; never lower than before.", examples=[42]
    )
    # The reader's version after the change; the latest one when the cursor did not move.
    version: Version = Field(
        description="The caller's version after the change (the latest one if nothing moved).",
        examples=[8],
    )


class DeviceDeleteIn(_In):
    """The caller's password, re-entered: a token alone (a stolen one, say) cannot end other
    devices."""

    password: Text = Field(max_length=1024, description="The user's password." + _CLEAN)


class PasswordChangeIn(_In):
    """A new password; the other devices are logged out unless asked otherwise."""

    old_password: Text = Field(max_length=1024, description="The current password." + _CLEAN)
    new_password: Password
    logout_other_devices: bool = Field(
        default=True, description="Log out every other device of the user (the calling one stays)."
    )


class Status(BaseModel):
    """A probe's answer."""

    status: Literal["ok", "ready"] = Field(
        description="`ok`: the process runs (/healthz); `ready`: the database answers (/readyz)."
    )


# Push (docs/push.md). The limits follow the Matrix push API: a pushkey is at most 512 bytes.
class PusherIn(_In):
    """A push gateway registration for the calling device (Matrix Push Gateway API v1)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "app_id": "com.example.messenger.ios",
                    "pushkey": "a1b2c3d4",
                    "gateway_url": "https://push.example.com/_matrix/push/v1/notify",
                    "format": "id_only",
                }
            ]
        }
    )

    app_id: Text = Field(
        min_length=1, max_length=64, description="The app's id at the push gateway." + _CLEAN
    )
    pushkey: Text = Field(
        min_length=1,
        max_length=512,
        description="The platform's push token for this device (APNs, FCM, ...)." + _CLEAN,
    )
    gateway_url: Text = Field(
        min_length=1,
        max_length=2048,
        description="The gateway's notify URL; must be within one of the operator's allowed "
        "gateways (MSGSYNC_PUSH_GATEWAYS), compared as URLs: no dot segments, encoded dots, "
        "backslashes, user@ or fragment." + _CLEAN,
    )
    format: Literal["id_only", "full"] = Field(
        default="id_only",
        description="`id_only`: ids and counts only; `full`: also the sender and the body.",
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to the gateway as the device's `data`; at most 4 KiB of JSON.",
    )


class PusherOut(BaseModel):
    """A registered pusher."""

    app_id: str = Field(description="The app's id at the push gateway.")
    pushkey: str = Field(description="The platform's push token.")
    gateway_url: str = Field(description="The gateway's notify URL.")
    format: Literal["id_only", "full"] = Field(description="What a notification carries.")
    data: dict[str, Any] = Field(description="Passed to the gateway as the device's `data`.")
    device_id: str = Field(description="The device the pusher belongs to.")
    created_at: datetime = Field(description="When the pusher was registered.")


class PusherCreated(BaseModel):
    """The pusher just registered (or replaced)."""

    pusher: PusherOut = Field(description="The pusher.")


class PushersOut(BaseModel):
    """The pushers of the user's devices."""

    pushers: list[PusherOut] = Field(description="Every pusher of the user's devices.")


class SyncQuery(BaseModel):
    """GET /sync's query, the one place it is declared: the route reads it through FastAPI
    and the edge (app.edge.hotpaths) validates a plain request's query against this same
    model, once, so both agree on what a request asks for. A parameter is a field here."""

    since: int | None = Field(
        None,
        ge=0,
        le=MAX_ID,
        description="The last version the device has seen (`next_since` of its previous "
        "page); absent: the device's ack cursor. Above the latest version: 409.",
    )
    since_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=ENTRY_ID_PATTERN,
        description="The `id` of the entry at `since`, as the device received it. When "
        "that entry is still stored and is another one now (the server's history was "
        "rewritten by a restore or a failover), 409 `history_rewritten`. Not checked "
        "at or below the floor (pruned entries); absent: not checked.",
    )
    limit: int | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="Entries per page: 1 to MSGSYNC_SYNC_MAX_LIMIT (1000 by default; "
        "above it, 422 `limit_out_of_range`); absent: MSGSYNC_SYNC_DEFAULT_LIMIT (100).",
        json_schema_extra={"x-from-settings": {"maximum": "sync_max_limit"}},
    )
    timeout: float = Field(
        0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds to wait when nothing is newer than `since` (a long-poll); "
        "the answer comes as soon as a change commits. Longer waits are cut to the "
        "server's maximum (MSGSYNC_MAX_TIMEOUT, 60 s by default: `x-clamped-to`). "
        "0: answer at once.",
        json_schema_extra={"x-from-settings": {"x-clamped-to": "max_timeout"}},
    )
