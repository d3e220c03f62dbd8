/** The local store: what the device knows, and the cursor that says up to where.
 *
 * A store applies a page's entries and the page's cursor in one local transaction, so a
 * crash leaves both or neither: restarting from the stored cursor then neither skips nor
 * re-applies an entry. Every store keeps the whole state in memory (reads are synchronous,
 * for rendering) and writes each change to its medium before the memory copy is updated:
 * memory never runs ahead of what is durable. */
import type {
  Entry,
  Group,
  GroupEvent,
  GroupEventsPage,
  GroupMember,
  GroupRole,
  GroupState,
  Message,
  OutboxItem,
  ReadReceipt,
  Recall,
  Session,
  SyncPage,
} from "./types.js";
import { groupOf } from "./types.js";

export interface StoreState {
  session: Session | null;
  cursor: number;
  /** The id of the entry at the cursor, sent as `since_id` (null when unknown). */
  cursorId: string | null;
  acked: number;
  gaps: number;
  messages: Map<number, Message>;
  /** The latest receipt per reader and peer, keyed `${reader}\n${peer}`. */
  reads: Map<string, ReadReceipt>;
  /** The groups this user is a member of, by id. */
  groups: Map<string, GroupState>;
  /** [version, kind] of every applied entry, in order, since the last reset. */
  applied: [number, string][];
  /** By client_msg_id, in creation order (a Map keeps insertion order). */
  outbox: Map<string, OutboxItem>;
}

export function emptyState(): StoreState {
  return {
    session: null,
    cursor: 0,
    cursorId: null,
    acked: 0,
    gaps: 0,
    messages: new Map(),
    reads: new Map(),
    groups: new Map(),
    applied: [],
    outbox: new Map(),
  };
}

/** One local transaction's worth of changes. */
export interface Change {
  /** Forget everything first: the session, the counters, the stream and the outbox (logout,
   * or a login by another account). */
  clear?: boolean;
  /** Forget the stream first (since_ahead / history_rewritten recovery). */
  resetStream?: boolean;
  meta?: {
    session?: Session | null;
    cursor?: number;
    cursorId?: string | null;
    acked?: number;
    gaps?: number;
  };
  messages?: Message[];
  reads?: ReadReceipt[];
  /** Groups written whole (new, or changed). */
  groups?: GroupState[];
  /** Groups this user is no longer in: forgotten with their messages (`dropMessages`). */
  dropGroups?: string[];
  dropMessages?: number[];
  applied?: [number, string][];
  outbox?: OutboxItem[];
}

/** What one page changed, for the app's callbacks (after the local commit). */
export interface Applied {
  messages: Message[];
  recalls: Recall[];
  reads: ReadReceipt[];
  /** Groups whose state changed (joined, renamed, read, news), or that were dropped. */
  groups: string[];
  count: number;
}

export const readKey = (reader: string, peer: string): string => `${reader}\n${peer}`;

/** Test hook: called after a page's changes are computed and before they are committed. */
export type BeforeCommit = (change: Change) => void | Promise<void>;

/** A change computed from the state as it is when its turn to commit comes. */
export type Plan = (state: StoreState) => Change | Promise<Change>;

export abstract class Store {
  protected state: StoreState = emptyState();
  /** Keep the log of applied versions (what the conformance suite inspects). A browser
   * has no use for it and would only grow it: IndexedDbStore leaves it off by default. */
  protected keepLog = true;

  /** Write `change` durably, as one transaction. */
  protected abstract persist(change: Change): Promise<void>;

  abstract close(): void;

  get session(): Session | null {
    return this.state.session;
  }
  get cursor(): number {
    return this.state.cursor;
  }
  get cursorId(): string | null {
    return this.state.cursorId;
  }
  get acked(): number {
    return this.state.acked;
  }
  get gaps(): number {
    return this.state.gaps;
  }

  /** Messages sorted by id; with `peer`, only that direct conversation's. */
  messages(peer?: string): Message[] {
    const user = this.state.session?.user_id ?? "";
    const all = [...this.state.messages.values()].sort((a, b) => a.id - b.id);
    if (peer === undefined) return all;
    return all.filter((m) => groupOf(m) === null && (m.from === user ? m.to : m.from) === peer);
  }
  /** A group's messages in the group's order (seq). */
  groupMessages(groupId: string): Message[] {
    return [...this.state.messages.values()]
      .filter((m) => groupOf(m) === groupId)
      .sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
  }
  message(id: number): Message | undefined {
    return this.state.messages.get(id);
  }
  reads(): ReadReceipt[] {
    return [...this.state.reads.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
  }
  read(reader: string, peer: string): ReadReceipt | undefined {
    return this.state.reads.get(readKey(reader, peer));
  }
  /** The groups this user is in, by id. */
  groups(): GroupState[] {
    return [...this.state.groups.values()].sort((a, b) => (a.group_id < b.group_id ? -1 : a.group_id > b.group_id ? 1 : 0));
  }
  group(groupId: string): GroupState | undefined {
    return this.state.groups.get(groupId);
  }
  applied(): [number, string][] {
    return [...this.state.applied];
  }
  outbox(): OutboxItem[] {
    return [...this.state.outbox.values()];
  }

  /** The last commit: each waits for the one before, so a store writes one change at a
   * time, in the order asked, each on top of the state the previous one left (a FileStore
   * writes the whole state: two at once would lose one, or write back what a clear just
   * forgot). */
  private last: Promise<unknown> = Promise.resolve();

  /** Commit a change, or a plan: computed when its turn comes, from the state the commits
   * before it left (a group's state written whole must not undo a change committed since
   * it was read). */
  commit(change: Change | Plan): Promise<void> {
    const run = this.last.then(async () => {
      let c = typeof change === "function" ? await change(this.state) : change;
      if (!this.keepLog && c.applied) c = { ...c, applied: [] };
      await this.persist(c);
      applyChange(this.state, c);
    });
    this.last = run.catch(() => undefined); // a failed commit does not block the next
    return run;
  }

  setSession(session: Session | null): Promise<void> {
    return this.commit({ meta: { session } });
  }
  setAcked(version: number): Promise<void> {
    return this.commit((s) => ({ meta: { acked: Math.max(s.acked, version) } }));
  }
  putOutbox(item: OutboxItem): Promise<void> {
    return this.commit({ outbox: [item] });
  }
  /** since_ahead / history_rewritten recovery: forget the stream (messages, receipts,
   * groups, the applied log) and set the cursor to 0 with no entry id, in one transaction;
   * the outbox and the session stay. */
  resetStream(): Promise<void> {
    return this.commit({ resetStream: true, meta: { cursor: 0, cursorId: null, acked: 0 } });
  }
  /** Logout, or a login by another account: forget everything the store holds (the session
   * and its token, the stream, the cursor, the read receipts, the groups, the outbox, the
   * counters) in one transaction. A crash leaves the old store or an empty one, never a
   * cursor without its stream or an outbox without its user. */
  clear(): Promise<void> {
    return this.commit({ clear: true });
  }
  /** Apply the entries above the cursor in version order and store the page's cursor (and
   * count a gap for a history_fallback page), all in one local transaction. */
  async applyPage(page: SyncPage, beforeCommit?: BeforeCommit): Promise<Applied> {
    let applied: Applied = emptyApplied();
    await this.commit(async (state) => {
      const planned = planPage(state, page);
      applied = planned.applied;
      if (beforeCommit) await beforeCommit(planned.change);
      return planned.change;
    });
    return applied;
  }
  /** Apply a page of a group's log and the group's new position, in one local
   * transaction: a crash before it leaves the position (and the news) as they were, and
   * the page is read again. */
  async applyGroupEvents(groupId: string, page: GroupEventsPage): Promise<Applied> {
    let applied: Applied = emptyApplied();
    await this.commit((state) => {
      const planned = planGroupEvents(state, groupId, page);
      applied = planned.applied;
      return planned.change;
    });
    return applied;
  }
  /** Merge what the server says of a group (its details and this user's read cursor); the
   * log position and the member list stay. A group not known here is added. */
  saveGroup(group: Group): Promise<void> {
    return this.commit((state) => {
      const old = state.groups.get(group.group_id) ?? newGroup(group.group_id);
      return { groups: [withDetails(old, group)] };
    });
  }
  /** The group's details and its whole member list, as the server showed them: nothing
   * left to fetch. */
  refreshGroup(group: Group, members: GroupMember[]): Promise<void> {
    return this.commit((state) => {
      const old = state.groups.get(group.group_id);
      if (!old) return {}; // left meanwhile
      const roles: Record<string, GroupRole> = {};
      for (const m of members) roles[m.user_id] = m.role;
      const me = state.session?.user_id ?? "";
      const fresh = { ...withDetails(old, group), members: roles, role: roles[me] ?? old.role, stale: false };
      return { groups: [fresh] };
    });
  }
  /** This user's read cursor in a group, never moved back. */
  setGroupRead(groupId: string, readSeq: number): Promise<void> {
    return this.commit((state) => {
      const old = state.groups.get(groupId);
      if (!old || old.read_seq >= readSeq) return {};
      return { groups: [{ ...old, read_seq: readSeq }] };
    });
  }
  /** Forget a group this user is no longer in, with its messages. */
  dropGroup(groupId: string): Promise<void> {
    return this.commit((state) => {
      const planner = new Planner(state);
      planner.drop(groupId);
      return planner.change();
    });
  }
}

export function emptyApplied(): Applied {
  return { messages: [], recalls: [], reads: [], groups: [], count: 0 };
}

export function newGroup(groupId: string): GroupState {
  return {
    group_id: groupId,
    title: null,
    owner: null,
    role: null,
    members: {},
    member_count: null,
    large: false,
    seq: 0,
    news: 0,
    read_seq: 0,
    stale: true,
  };
}

function withDetails(old: GroupState, group: Group): GroupState {
  return {
    ...old,
    title: group.title,
    owner: group.owner,
    member_count: group.member_count,
    large: group.large,
    read_seq: Math.max(old.read_seq, group.read_seq),
  };
}

const ROLES = new Set<string>(["owner", "admin", "member"]);
const asRole = (value: unknown): GroupRole => (typeof value === "string" && ROLES.has(value) ? (value as GroupRole) : "member");

/** The user ids of a `created` event's member list (ids, or objects with a user_id). */
function userIds(value: unknown): string[] | null {
  if (!Array.isArray(value)) return null;
  const ids: string[] = [];
  for (const item of value) {
    if (typeof item === "string") ids.push(item);
    else if (item !== null && typeof item === "object" && typeof (item as { user_id?: unknown }).user_id === "string") {
      ids.push((item as { user_id: string }).user_id);
    }
  }
  return ids;
}

/** A page's (or a log page's) writes, computed against the state and seen by later
 * entries of the same page. */
class Planner {
  readonly applied: Applied = emptyApplied();
  private readonly messages = new Map<number, Message>();
  private readonly reads = new Map<string, ReadReceipt>();
  private readonly groups = new Map<string, GroupState>();
  private readonly dropped = new Set<string>();
  private readonly dropMessages = new Set<number>();
  readonly me: string;

  constructor(private readonly state: StoreState) {
    this.me = state.session?.user_id ?? "";
  }

  message(id: number): Message | undefined {
    if (this.dropMessages.has(id)) return undefined;
    return this.messages.get(id) ?? this.state.messages.get(id);
  }

  group(groupId: string): GroupState | undefined {
    if (this.dropped.has(groupId) && !this.groups.has(groupId)) return undefined;
    return this.groups.get(groupId) ?? this.state.groups.get(groupId);
  }

  setGroup(group: GroupState): void {
    this.groups.set(group.group_id, group);
    if (!this.applied.groups.includes(group.group_id)) this.applied.groups.push(group.group_id);
  }

  putMessage(message: Message): void {
    const old = this.message(message.id);
    // A recall is final: a copy of the message read again (from the log) does not undo it.
    const kept = old?.recalled_at ? { ...message, body: "", recalled_at: old.recalled_at } : message;
    this.messages.set(kept.id, kept); // keyed by id: the sender's own copy lands once
    this.dropMessages.delete(kept.id);
    this.applied.messages.push(kept);
  }

  recall(recall: Recall): void {
    const old = this.message(recall.message_id);
    if (old) this.messages.set(old.id, { ...old, body: "", recalled_at: recall.recalled_at });
    this.applied.recalls.push(recall);
  }

  read(receipt: ReadReceipt): void {
    const key = readKey(receipt.reader, receipt.peer);
    const current = this.reads.get(key) ?? this.state.reads.get(key);
    if (!current || current.up_to_message_id < receipt.up_to_message_id) {
      this.reads.set(key, { reader: receipt.reader, peer: receipt.peer, up_to_message_id: receipt.up_to_message_id });
    }
    this.applied.reads.push(receipt);
  }

  groupRead(groupId: string, upToSeq: number): void {
    const g = this.group(groupId);
    if (g && g.read_seq < upToSeq) this.setGroup({ ...g, read_seq: upToSeq });
  }

  /** A group_news entry (or an event the stream cannot apply yet): the log holds events up
   * to `seq`, to be read from our position to its end. A read is due whatever `seq` says:
   * the server counts its news as covered only once a read reaches the end of the log, and
   * sends no other news of the group until then (around a mode switch the stream may carry
   * an event and news of it). */
  news(groupId: string, seq: number): void {
    const g = this.group(groupId) ?? newGroup(groupId);
    const news = Math.max(g.news, seq, g.seq + 1);
    if (news !== g.news || !this.group(groupId)) this.setGroup({ ...g, news });
  }

  /** This user is no longer in the group: forget it and its messages. */
  drop(groupId: string): void {
    this.groups.delete(groupId);
    this.dropped.add(groupId);
    for (const [id, m] of this.messages) if (groupOf(m) === groupId) this.messages.delete(id);
    for (const m of this.state.messages.values()) if (groupOf(m) === groupId) this.dropMessages.add(m.id);
    if (!this.applied.groups.includes(groupId)) this.applied.groups.push(groupId);
  }

  /** A group event, from this user's stream (`inOrder` false) or from the group's log read
   * from our position (in order by contract). Each event is applied once, by seq: one at or
   * below the position is skipped; from the stream, only the next one is applied, and only
   * while no read of the log is due; any other (a gap: a pruned stream, a large group, a
   * mode switch, where the same event may come both in the log and as an entry) waits for
   * the log read, which applies it in its turn. */
  event(groupId: string, event: GroupEvent, inOrder: boolean): void {
    const data = event.data;
    const concernsMe = data["user_id"] === this.me;
    const joins = event.kind === "created" || (event.kind === "member_added" && concernsMe);
    let g = this.group(groupId);
    if ((event.kind === "member_removed" || event.kind === "member_left") && concernsMe) {
      // Whatever the gap before it: the server sends nothing more of this group.
      if (g && event.seq > g.seq) this.drop(groupId);
      return;
    }
    if (!g) {
      if (!joins) {
        if (!this.dropped.has(groupId)) this.news(groupId, event.seq); // its start is in the log
        return; // else nothing of a group left
      }
      // The first event of this membership: the history shown starts here.
      g = { ...newGroup(groupId), seq: event.seq - 1 };
    }
    if (event.seq <= g.seq) return; // applied before
    if (!inOrder && (event.seq !== g.seq + 1 || g.news > g.seq)) {
      this.news(groupId, event.seq);
      return;
    }
    let next: GroupState = { ...g, seq: event.seq };
    if (next.news <= next.seq) next = { ...next, news: 0 };
    const user = typeof data["user_id"] === "string" ? data["user_id"] : "";
    const members = { ...next.members };
    if (event.kind === "message") {
      const message = event.data as unknown as Message;
      // The log's copy may leave its group to the path: the event says it.
      this.putMessage({ ...message, group_id: groupId, seq: event.seq });
    } else if (event.kind === "recall") {
      const id = data["message_id"];
      const old = typeof id === "number" ? this.message(id) : undefined;
      if (old) this.recall({ message_id: old.id, from: old.from, to: null, group_id: groupId, recalled_at: event.created_at });
    } else if (event.kind === "created") {
      members[event.actor] = "owner";
      const listed = userIds(data["members"]);
      for (const id of listed ?? []) members[id] ??= "member";
      const title = typeof data["title"] === "string" ? data["title"] : next.title;
      next = {
        ...next,
        title,
        owner: event.actor,
        role: members[this.me] ?? next.role,
        members,
        // The event names the title and every first member: nothing to fetch.
        stale: next.stale && !(title !== null && listed !== null),
        // A member has read the event that added them (the server's cursor starts there).
        read_seq: this.me in members ? Math.max(next.read_seq, event.seq) : next.read_seq,
      };
    } else if (event.kind === "member_added") {
      members[user] = asRole(data["role"]);
      next = { ...next, members };
      if (concernsMe) next = { ...next, role: "member", read_seq: Math.max(next.read_seq, event.seq) };
    } else if (event.kind === "member_removed" || event.kind === "member_left") {
      delete members[user];
      // An owner who leaves hands over through a role_changed event that follows.
      next = { ...next, members, owner: user === next.owner ? null : next.owner };
    } else if (event.kind === "title_changed") {
      if (typeof data["title"] === "string") next = { ...next, title: data["title"] };
    } else if (event.kind === "role_changed") {
      const role = asRole(data["role"]);
      members[user] = role;
      next = {
        ...next,
        members,
        owner: role === "owner" ? user : next.owner,
        role: concernsMe ? role : next.role,
      };
    }
    // Unknown event kinds move the position and are otherwise ignored.
    if (!next.stale) next = { ...next, member_count: Object.keys(next.members).length };
    this.setGroup(next);
  }

  change(): Change {
    const change: Change = {
      messages: [...this.messages.values()],
      reads: [...this.reads.values()],
      groups: [...this.groups.values()],
    };
    if (this.dropped.size) {
      change.dropGroups = [...this.dropped].filter((id) => !this.groups.has(id));
      change.dropMessages = [...this.dropMessages];
    }
    return change;
  }
}

/** The id of the entry at the page's `next_since` (the `since_id` to send with it), or
 * null when the page does not end on an entry. */
export function cursorIdOf(page: SyncPage): string | null {
  const last = page.entries[page.entries.length - 1];
  return last !== undefined && last.version === page.next_since ? (last.id ?? null) : null;
}

/** Compute a page's change without touching `state`. */
export function planPage(state: StoreState, page: SyncPage): { change: Change; applied: Applied } {
  const planner = new Planner(state);
  const log: [number, string][] = [];
  let cursor = state.cursor;
  for (const entry of page.entries) {
    // Each version once, even if a server (or a retry) repeats one. Except group_news: a
    // sync below the floor names every group in entries that share the floor's version
    // (applying news again only raises a mark already raised).
    if (entry.version < cursor || (entry.version === cursor && entry.kind !== "group_news")) continue;
    log.push([entry.version, entry.kind]);
    planner.applied.count += 1;
    applyEntry(entry, planner);
    cursor = entry.version;
  }
  // next_since may jump past the last entry (a pruned range of operations only): store it.
  cursor = Math.max(cursor, page.next_since);
  const meta: Change["meta"] = { cursor, gaps: state.gaps + (page.history_fallback ? 1 : 0) };
  // The cursor moved: keep the id of the entry it stands on (none when it jumped past).
  if (page.next_since > state.cursor) meta.cursorId = cursorIdOf(page);
  const change: Change = {
    ...planner.change(),
    meta,
    applied: log,
  };
  return { change, applied: planner.applied };
}

/** Compute a log page's change: its events in seq order, and the group's new position. */
export function planGroupEvents(
  state: StoreState,
  groupId: string,
  page: GroupEventsPage,
): { change: Change; applied: Applied } {
  const planner = new Planner(state);
  if (!planner.group(groupId)) return { change: {}, applied: planner.applied }; // left since
  for (const event of page.events) planner.event(groupId, event, true);
  const g = planner.group(groupId);
  if (g) {
    // Past the last event when the page ends beyond it; up to date when there is no more.
    const seq = Math.max(g.seq, page.next_after_seq);
    // More to read: the read stays due (up to the log's latest at least), whatever the news
    // said: only a read that reaches the end covers the news on the server, and a crash
    // before the next page goes on from here. None: this read covered every signal so far.
    const news = page.has_more ? Math.max(g.news, page.latest_seq, seq + 1) : 0;
    if (seq !== g.seq || news !== g.news) planner.setGroup({ ...g, seq, news });
  }
  return { change: planner.change(), applied: planner.applied };
}

function applyEntry(entry: Entry, planner: Planner): void {
  if (entry.kind === "message") {
    const message = entry.data as unknown as Message;
    const groupId = groupOf(message);
    if (groupId === null) {
      planner.putMessage(message);
    } else if (typeof message.seq === "number") {
      const event: GroupEvent = { seq: message.seq, kind: "message", created_at: message.created_at, actor: message.from, data: message as unknown as Record<string, unknown> };
      planner.event(groupId, event, false);
    } else {
      planner.putMessage(message);
    }
  } else if (entry.kind === "recall") {
    const data = entry.data as { message_id: number; from: string; to?: string | null; group_id?: string | null; seq?: number | null };
    const groupId = data.group_id ?? null;
    // A recall takes effect at its entry's time: the server writes both in one transaction.
    const recall: Recall = { message_id: data.message_id, from: data.from, to: data.to ?? null, group_id: groupId, recalled_at: entry.created_at };
    if (groupId !== null && typeof data.seq === "number") {
      // The recall is an event of the group: applied in its turn, once (see Planner.event).
      const event: GroupEvent = { seq: data.seq, kind: "recall", created_at: entry.created_at, actor: data.from, data: { message_id: data.message_id } };
      planner.event(groupId, event, false);
      return;
    }
    if (groupId !== null && !planner.group(groupId)) return; // a group this user left
    planner.recall(recall);
  } else if (entry.kind === "read") {
    const data = entry.data as { reader: string; peer?: string; up_to_message_id?: number; group_id?: string; up_to_seq?: number };
    if (typeof data.group_id === "string") {
      planner.groupRead(data.group_id, data.up_to_seq ?? 0);
    } else {
      planner.read(data as ReadReceipt);
    }
  } else if (entry.kind === "group") {
    const data = entry.data as { group_id: string; event: GroupEvent };
    planner.event(data.group_id, data.event, false);
  } else if (entry.kind === "group_news") {
    const data = entry.data as { group_id: string; seq: number };
    planner.news(data.group_id, data.seq);
  }
  // Unknown kinds: counted as applied (the cursor moves past them) and otherwise ignored,
  // so a newer server cannot wedge an older client.
}

/** Apply a committed change to the in-memory state. */
export function applyChange(state: StoreState, change: Change): void {
  if (change.clear) Object.assign(state, emptyState());
  if (change.resetStream) {
    state.messages.clear();
    state.reads.clear();
    state.groups.clear();
    state.applied = [];
  }
  const meta = change.meta ?? {};
  if (meta.session !== undefined) state.session = meta.session;
  if (meta.cursor !== undefined) state.cursor = meta.cursor;
  if (meta.cursorId !== undefined) state.cursorId = meta.cursorId;
  if (meta.acked !== undefined) state.acked = meta.acked;
  if (meta.gaps !== undefined) state.gaps = meta.gaps;
  for (const id of change.dropMessages ?? []) state.messages.delete(id);
  for (const id of change.dropGroups ?? []) state.groups.delete(id);
  for (const m of change.messages ?? []) state.messages.set(m.id, m);
  for (const r of change.reads ?? []) state.reads.set(readKey(r.reader, r.peer), r);
  for (const g of change.groups ?? []) state.groups.set(g.group_id, g);
  for (const a of change.applied ?? []) state.applied.push(a);
  for (const o of change.outbox ?? []) state.outbox.set(o.client_msg_id, o);
}

/** A store that lives as long as the process: tests, bots, short scripts. */
export class MemoryStore extends Store {
  protected async persist(_change: Change): Promise<void> {}
  close(): void {}
}
