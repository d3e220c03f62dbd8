"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "MAX_ID",
    "AckIn",
    "AckOut",
    "ConversationOut",
    "ConversationsPage",
    "DeviceOut",
    "DevicesOut",
    "Entry",
    "HistoryPage",
    "LoginIn",
    "LoginOut",
    "MessageOut",
    "PusherCreated",
    "PusherIn",
    "PusherOut",
    "PushersOut",
    "ReadIn",
    "ReadOut",
    "RecallOut",
    "SendIn",
    "SendOut",
    "SyncPage",
    "UserIn",
    "UserOut",
]

# Ids are PostgreSQL BIGINTs: a larger value must be a 422, not a driver error.
MAX_ID = 2**63 - 1

UserId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(_In):
    user_id: UserId
    password: Password


class UserOut(BaseModel):
    user_id: str


class LoginIn(_In):
    user_id: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    device_name: str = Field(default="", max_length=128)


class LoginOut(BaseModel):
    user_id: str
    device_id: str
    access_token: str


class DeviceOut(BaseModel):
    device_id: str
    name: str
    acked_version: int
    created_at: datetime
    last_seen_at: datetime


class DevicesOut(BaseModel):
    devices: list[DeviceOut]


class MessageOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    from_: str = Field(alias="from")
    to: str
    body: str
    client_msg_id: str | None
    created_at: datetime
    recalled_at: datetime | None


class SendIn(_In):
    to: str = Field(max_length=64)
    # The byte limit (MSGSYNC_MAX_BODY_BYTES, 413 body_too_large) is checked on the UTF-8 form.
    body: str
    client_msg_id: str | None = Field(default=None, min_length=1, max_length=128)


class SendOut(BaseModel):
    message: MessageOut
    version: int


class RecallOut(BaseModel):
    message: MessageOut


class RecallData(BaseModel):
    message_id: int
    from_: str = Field(alias="from")
    to: str


class ReadData(BaseModel):
    reader: str
    peer: str
    up_to_message_id: int


class Entry(BaseModel):
    version: int
    kind: Literal["message", "recall", "read"]
    created_at: datetime
    data: MessageOut | RecallData | ReadData


class SyncPage(BaseModel):
    entries: list[Entry]
    next_since: int
    latest_version: int
    has_more: bool
    history_fallback: bool


class AckIn(_In):
    version: int = Field(ge=0, le=MAX_ID)


class AckOut(BaseModel):
    device_id: str
    acked_version: int


class ConversationOut(BaseModel):
    peer: str
    last_message: MessageOut
    unread_count: int


class ConversationsPage(BaseModel):
    conversations: list[ConversationOut]
    next_before: int | None


class HistoryPage(BaseModel):
    messages: list[MessageOut]
    next_before_id: int | None


class ReadIn(_In):
    up_to_message_id: int = Field(ge=1, le=MAX_ID)


class ReadOut(BaseModel):
    peer: str
    # The cursor after the request: never lower than before, whatever up_to_message_id was.
    read_up_to_id: int
    # The reader's version after the change; the latest one when the cursor did not move.
    version: int


# Push (docs/push.md). The limits follow the Matrix push API: a pushkey is at most 512 bytes.
class PusherIn(_In):
    app_id: str = Field(min_length=1, max_length=64)
    pushkey: str = Field(min_length=1, max_length=512)
    gateway_url: str = Field(min_length=1, max_length=2048)
    format: Literal["id_only", "full"] = "id_only"
    data: dict[str, Any] = Field(default_factory=dict)


class PusherOut(BaseModel):
    app_id: str
    pushkey: str
    gateway_url: str
    format: Literal["id_only", "full"]
    data: dict[str, Any]
    device_id: str
    created_at: datetime


class PusherCreated(BaseModel):
    pusher: PusherOut


class PushersOut(BaseModel):
    pushers: list[PusherOut]
