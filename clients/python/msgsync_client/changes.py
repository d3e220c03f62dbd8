"""What a page changes, computed once for every store: each store only saves a `Change`.

A page of the user's stream, or a page of a group's log, becomes one `Change`, written by
the store in one local transaction with the position it reaches (the stream's cursor, the
group's `seq`), so that a crash leaves both or neither.

Groups. A group's `seq` here means "every event up to it is applied", and each event is
applied once, by seq: only the next one (`seq + 1`) is applied, and one at or below `seq` is
skipped, whether it comes from the stream or from the group's log. Events of a small group
arrive in the stream in seq order. One that is not the next (the stream was pruned, the
group is large or has just changed mode, so the same event may come both in the log and as
an entry) is not applied from the stream: it raises `news_seq`, as a `group_news` entry
does, and the log read applies it in its turn. While `news_seq > seq` a read of the log is
due: the client reads it from `seq` until `has_more` is false (see Client.sync_groups), and
meanwhile the stream's events of that group wait for the log too. Every `group_news` entry
makes a read due, even one that names a seq already applied here: the server counts a news
as covered only once a read reaches the group's end, and sends no other news of the group
until then."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from msgsync_client.models import (
    Entry,
    EventsPage,
    Group,
    GroupEvent,
    GroupMember,
    GroupRead,
    GroupState,
    Message,
    Page,
    ReadReceipt,
    Recall,
)

__all__ = [
    "Applied",
    "Change",
    "StoreView",
    "plan_drop",
    "plan_events",
    "plan_page",
    "plan_refresh",
]

_DEPARTURES = {"member_removed", "member_left"}


@dataclass
class Applied:
    """What one change did, for the app's callbacks (after the local commit)."""

    messages: list[Message] = field(default_factory=list)
    recalls: list[Recall] = field(default_factory=list)
    reads: list[ReadReceipt] = field(default_factory=list)
    group_events: list[GroupEvent] = field(default_factory=list)  # all but messages, recalls
    group_reads: list[GroupRead] = field(default_factory=list)
    count: int = 0  # stream entries applied (what the acker counts)


@dataclass
class Change:
    """One local transaction. A store writes, in this order: drop `dropped_groups` (their
    state, members and messages), upsert `messages`, apply `recalls`, merge `reads` (a
    receipt never moves back), upsert `groups` (their member lists only for the ids in
    `members_changed`), append `applied`, then the cursor and the gap count."""

    messages: dict[int, Message] = field(default_factory=dict)
    recalls: list[Recall] = field(default_factory=list)
    reads: dict[tuple[str, str], ReadReceipt] = field(default_factory=dict)
    groups: dict[str, GroupState] = field(default_factory=dict)
    members_changed: set[str] = field(default_factory=set)
    dropped_groups: set[str] = field(default_factory=set)
    applied: list[tuple[int, str]] = field(default_factory=list)
    cursor: int | None = None  # None: the stream's cursor stays
    # The id of the entry at `cursor` (sent as `since_id`), written with it; None: unknown.
    cursor_id: str | None = None
    gap: bool = False


class StoreView(Protocol):
    """What planning reads from a store."""

    def cursor(self) -> int: ...
    def cursor_id(self) -> str | None: ...
    def group(self, group_id: str) -> GroupState | None: ...


class _Planner:
    def __init__(self, store: StoreView, user_id: str) -> None:
        self.store = store
        self.me = user_id
        self.change = Change()
        self.applied = Applied()
        # This change's view of each group it touched: None once dropped.
        self._groups: dict[str, GroupState | None] = {}

    # -- groups as this change sees them ---------------------------------------------------

    def group(self, group_id: str) -> GroupState | None:
        if group_id not in self._groups:
            self._groups[group_id] = self.store.group(group_id)
        return self._groups[group_id]

    def put(self, state: GroupState, members_changed: bool = False) -> None:
        self._groups[state.group_id] = state
        self.change.groups[state.group_id] = state
        if members_changed:
            self.change.members_changed.add(state.group_id)

    def drop(self, group_id: str) -> None:
        """The user left or was removed: the group goes, with its messages."""
        self._groups[group_id] = None
        self.change.groups.pop(group_id, None)
        self.change.members_changed.discard(group_id)
        self.change.dropped_groups.add(group_id)
        for message_id in [i for i, m in self.change.messages.items() if m.group_id == group_id]:
            del self.change.messages[message_id]

    def announce(self, group_id: str, seq: int) -> GroupState:
        """The group has events up to `seq` that are not all applied here: a read of its log
        to the end is due (at least one, whatever `seq` says)."""
        state = self.group(group_id)
        if state is None:
            # First heard of now (a pruned stream, or news): its details come from a refresh.
            state = GroupState(group_id)
        state = replace(state, news_seq=max(state.news_seq, seq, state.seq + 1))
        self.put(state)
        return state

    # -- the stream ------------------------------------------------------------------------

    def entry(self, entry: Entry) -> None:
        data = entry.data
        if entry.kind == "message":
            message = Message.from_json(data)
            if message.group_id is None:
                self.message(message)
            else:
                seq = message.seq or 0
                event = GroupEvent(
                    message.group_id, seq, "message", entry.created_at, message.sender, data
                )
                self.stream_event(event, message)
        elif entry.kind == "recall":
            group_id = data.get("group_id")
            recall = Recall(
                int(data["message_id"]),
                str(data["from"]),
                None if data.get("to") is None else str(data["to"]),
                entry.created_at,  # the server writes the recall and its entry together
                None if group_id is None else str(group_id),
            )
            if recall.group_id is not None and data.get("seq") is not None:
                event = GroupEvent(
                    recall.group_id, int(data["seq"]), "recall", entry.created_at,
                    recall.sender, {"message_id": recall.message_id},
                )  # fmt: skip
                self.stream_event(event)
            else:
                self.recall(recall)
        elif entry.kind == "read":
            if data.get("group_id") is not None:
                self.group_read(
                    GroupRead(str(data["reader"]), str(data["group_id"]), int(data["up_to_seq"]))
                )
            else:
                receipt = ReadReceipt(
                    str(data["reader"]), str(data["peer"]), int(data["up_to_message_id"])
                )
                key = (receipt.reader, receipt.peer)
                current = self.change.reads.get(key)
                if current is None or current.up_to_message_id < receipt.up_to_message_id:
                    self.change.reads[key] = receipt
                self.applied.reads.append(receipt)
        elif entry.kind == "group":
            self.stream_event(GroupEvent.from_json(str(data["group_id"]), data["event"]))
        elif entry.kind == "group_news":
            self.announce(str(data["group_id"]), int(data["seq"]))
        # Unknown kinds: counted as applied (the cursor moves past them) and otherwise
        # ignored, so a newer server cannot wedge an older client.

    def stream_event(self, event: GroupEvent, message: Message | None = None) -> None:
        state = self.group(event.group_id)
        mine = event.data.get("user_id") == self.me
        if event.kind in _DEPARTURES and mine:
            # Whatever came before it: the server sends nothing more of this group.
            if state is not None and (event.seq <= 0 or event.seq > state.seq):
                self.applied.group_events.append(event)
                self.drop(event.group_id)
            return
        if event.seq <= 0:
            # No seq (an older server): applied as it comes; the position cannot move.
            if state is None:
                state = self.announce(event.group_id, 0)
            self.effect(event, message)
            return
        joins = event.kind == "created" or (event.kind == "member_added" and mine)
        if state is None and joins:
            # The first event of this membership: the history shown starts here.
            start = event.seq - 1
            state = GroupState(event.group_id, seq=start, news_seq=start)
            self.put(state)
        if state is None or state.pending_news or event.seq != state.seq + 1:
            if state is None or event.seq > state.seq:
                # Not the next (a gap, a large group, a read already due): the log read
                # applies it in its turn, and it is applied there only.
                self.announce(event.group_id, event.seq)
            return  # at or below the position: applied already
        self.effect(event, message)
        after = self.group(event.group_id)
        if after is not None:
            self.put(replace(after, seq=event.seq, news_seq=max(after.news_seq, event.seq)))

    # -- effects ---------------------------------------------------------------------------

    def message(self, message: Message) -> None:
        self.change.messages[message.id] = message  # keyed by id: the sender's copy lands once
        self.applied.messages.append(message)

    def recall(self, recall: Recall) -> None:
        old = self.change.messages.get(recall.message_id)
        if old is not None:
            self.change.messages[old.id] = replace(old, body="", recalled_at=recall.recalled_at)
        self.change.recalls.append(recall)
        self.applied.recalls.append(recall)

    def group_read(self, read: GroupRead) -> None:
        state = self.group(read.group_id)
        if state is not None and read.up_to_seq > state.read_seq:
            self.put(replace(state, read_seq=read.up_to_seq))
        self.applied.group_reads.append(read)

    def effect(self, event: GroupEvent, parsed: Message | None = None) -> None:
        """Apply one event's effect on the group (known here: see stream_event); `parsed`:
        the event's message, when the caller has parsed it already."""
        state = self.group(event.group_id)
        assert state is not None
        data = event.data
        if event.kind == "message":
            message = parsed or Message.from_json(data)
            if message.group_id is None:  # the log's copy names its group by the path
                message = replace(message, group_id=event.group_id, seq=event.seq)
            self.message(message)
            return
        if event.kind == "recall":
            message_id = int(data["message_id"])
            old = self.change.messages.get(message_id)
            sender = old.sender if old is not None else event.actor
            self.recall(Recall(message_id, sender, None, event.created_at, event.group_id))
            return
        self.applied.group_events.append(event)
        members = dict(state.members)
        user = str(data.get("user_id") or "")
        if event.kind == "created":
            members[event.actor] = "owner"
            listed = data.get("members")
            for member in _user_ids(listed):
                members.setdefault(member, "member")
            title = str(data.get("title") or state.title)
            role = members.get(self.me, state.role)
            # The event names the title and every first member: nothing to fetch.
            stale = state.stale and not (title and isinstance(listed, list))
            # A member has read the event that added them (the server's cursor starts there).
            read_seq = max(state.read_seq, event.seq) if self.me in members else state.read_seq
            created = replace(
                state,
                title=title,
                owner=event.actor,
                role=role,
                members=members,
                stale=stale,
                read_seq=read_seq,
            )
            self.put(created, True)
        elif event.kind == "member_added":
            members[user] = str(data.get("role") or "member")
            if user == self.me:
                read_seq = max(state.read_seq, event.seq)
                self.put(replace(state, members=members, role="member", read_seq=read_seq), True)
            else:
                self.put(replace(state, members=members), True)
        elif event.kind in _DEPARTURES:
            if user == self.me:
                self.drop(event.group_id)
                return
            members.pop(user, None)
            # An owner who leaves hands over through a role_changed event that follows.
            owner = None if user == state.owner else state.owner
            self.put(replace(state, members=members, owner=owner), True)
        elif event.kind == "title_changed":
            self.put(replace(state, title=str(data.get("title") or state.title)))
        elif event.kind == "role_changed":
            role = str(data.get("role") or "member")
            members[user] = role
            owner = user if role == "owner" else state.owner
            mine = role if user == self.me else state.role
            self.put(replace(state, members=members, owner=owner, role=mine), True)
        # Unknown event kinds move the group's position and change nothing else.


def _user_ids(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    ids = []
    for item in value:
        if isinstance(item, str):
            ids.append(item)
        elif isinstance(item, dict) and "user_id" in item:
            ids.append(str(item["user_id"]))
    return ids


def plan_page(store: StoreView, user_id: str, page: Page) -> tuple[Change, Applied]:
    """The change of applying the page's entries above the store's cursor, in version
    order, and its cursor."""
    planner = _Planner(store, user_id)
    cursor = store.cursor()
    for entry in page.entries:
        # Each version once, even if a server (or a retry) repeats one. Except group_news:
        # a sync below the floor names every group in entries that share the floor's
        # version, and applying news twice only raises a mark that is already raised.
        if entry.version < cursor or (entry.version == cursor and entry.kind != "group_news"):
            continue
        planner.change.applied.append((entry.version, entry.kind))
        planner.applied.count += 1
        planner.entry(entry)
        cursor = entry.version
    # next_since may jump past the last entry (a pruned range of operations only): store it.
    planner.change.cursor = max(cursor, page.next_since)
    # The id goes with the cursor: the page's when it moved the cursor, else the one held.
    before = store.cursor()
    planner.change.cursor_id = page.cursor_id if page.next_since > before else store.cursor_id()
    planner.change.gap = page.history_fallback
    return planner.change, planner.applied


def plan_events(
    store: StoreView, user_id: str, group_id: str, page: EventsPage
) -> tuple[Change, Applied]:
    """The change of applying one page of a group's log read from the group's `seq`: its
    events above `seq`, in order, and the new position. At the end of the log (no
    `has_more`) the news is covered."""
    planner = _Planner(store, user_id)
    for event in page.events:
        state = planner.group(group_id)
        if state is None:
            return planner.change, planner.applied  # the user left in this very page
        if event.seq > state.seq:
            planner.effect(event)
    state = planner.group(group_id)
    if state is not None:
        seq = max(state.seq, page.next_after_seq)
        # More to read: the read stays due (up to the log's latest at least), whatever the
        # news said, so the loop goes on until has_more is false (only a read that reaches
        # the end covers the news on the server) and a crash before the next page resumes
        # from here. None: the read reached the end.
        if page.has_more:
            news = max(state.news_seq, page.latest_seq, seq + 1)
        else:
            news = min(state.news_seq, seq)
        planner.put(replace(state, seq=seq, news_seq=news))
    return planner.change, planner.applied


def plan_refresh(
    state: GroupState | None, user_id: str, group: Group, members: list[GroupMember]
) -> Change:
    """The group's details and its whole member list, as the server showed them."""
    base = state or GroupState(group.group_id)
    roles = {m.user_id: m.role for m in members}
    fresh = replace(
        base,
        title=group.title,
        owner=group.owner,
        role=roles.get(user_id, base.role),
        read_seq=max(base.read_seq, group.read_seq),
        stale=False,
        members=roles,
    )
    change = Change()
    change.groups[group.group_id] = fresh
    change.members_changed.add(group.group_id)
    return change


def plan_drop(group_id: str) -> Change:
    change = Change()
    change.dropped_groups.add(group_id)
    return change
