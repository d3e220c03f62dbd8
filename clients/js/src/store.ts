/** The local store: what the device knows, and the cursor that says up to where.
 *
 * A store applies a page's entries and the page's cursor in one local transaction, so a
 * crash leaves both or neither: restarting from the stored cursor then neither skips nor
 * re-applies an entry. Every store keeps the whole state in memory (reads are synchronous,
 * for rendering) and writes each change to its medium before the memory copy is updated:
 * memory never runs ahead of what is durable. */
import type { Entry, Message, OutboxItem, ReadReceipt, Recall, Session, SyncPage } from "./types.js";

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
  applied?: [number, string][];
  outbox?: OutboxItem[];
}

/** What one page changed, for the app's callbacks (after the local commit). */
export interface Applied {
  messages: Message[];
  recalls: Recall[];
  reads: ReadReceipt[];
  count: number;
}

export const readKey = (reader: string, peer: string): string => `${reader}\n${peer}`;

/** Test hook: called after a page's changes are computed and before they are committed. */
export type BeforeCommit = (change: Change) => void | Promise<void>;

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

  /** Messages sorted by id; with `peer`, only that conversation's. */
  messages(peer?: string): Message[] {
    const user = this.state.session?.user_id ?? "";
    const all = [...this.state.messages.values()].sort((a, b) => a.id - b.id);
    if (peer === undefined) return all;
    return all.filter((m) => (m.from === user ? m.to : m.from) === peer);
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

  commit(change: Change): Promise<void> {
    if (!this.keepLog && change.applied) change = { ...change, applied: [] };
    const run = this.last.then(async () => {
      await this.persist(change);
      applyChange(this.state, change);
    });
    this.last = run.catch(() => undefined); // a failed commit does not block the next
    return run;
  }

  setSession(session: Session | null): Promise<void> {
    return this.commit({ meta: { session } });
  }
  setAcked(version: number): Promise<void> {
    return this.commit({ meta: { acked: Math.max(this.state.acked, version) } });
  }
  putOutbox(item: OutboxItem): Promise<void> {
    return this.commit({ outbox: [item] });
  }
  /** since_ahead / history_rewritten recovery: forget the stream (messages, receipts, the
   * applied log) and set the cursor to 0, in one transaction; the outbox and the session
   * stay. */
  resetStream(): Promise<void> {
    return this.commit({ resetStream: true, meta: { cursor: 0, cursorId: null, acked: 0 } });
  }
  /** Logout, or a login by another account: forget everything the store holds (the session
   * and its token, the stream, the cursor, the read receipts, the outbox, the counters) in
   * one transaction. A crash leaves the old store or an empty one, never a cursor without
   * its stream or an outbox without its user. */
  clear(): Promise<void> {
    return this.commit({ clear: true });
  }
  /** Apply the entries above the cursor in version order and store the page's cursor (and
   * count a gap for a history_fallback page), all in one local transaction. */
  async applyPage(page: SyncPage, beforeCommit?: BeforeCommit): Promise<Applied> {
    const { change, applied } = planPage(this.state, page);
    if (beforeCommit) await beforeCommit(change);
    await this.commit(change);
    return applied;
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
  const applied: Applied = { messages: [], recalls: [], reads: [], count: 0 };
  const messages = new Map<number, Message>(); // this page's writes, seen by later entries
  const reads = new Map<string, ReadReceipt>();
  const log: [number, string][] = [];
  let cursor = state.cursor;
  for (const entry of page.entries) {
    // Each version once, even if a server (or a retry) repeats one.
    if (entry.version <= cursor) continue;
    log.push([entry.version, entry.kind]);
    applied.count += 1;
    applyEntry(entry, state, messages, reads, applied);
    cursor = entry.version;
  }
  // next_since may jump past the last entry (a pruned range of operations only): store it.
  cursor = Math.max(cursor, page.next_since);
  const meta: Change["meta"] = { cursor, gaps: state.gaps + (page.history_fallback ? 1 : 0) };
  // The cursor moved: keep the id of the entry it stands on (none when it jumped past).
  if (page.next_since > state.cursor) meta.cursorId = cursorIdOf(page);
  const change: Change = {
    meta,
    messages: [...messages.values()],
    reads: [...reads.values()],
    applied: log,
  };
  return { change, applied };
}

function applyEntry(
  entry: Entry,
  state: StoreState,
  messages: Map<number, Message>,
  reads: Map<string, ReadReceipt>,
  applied: Applied,
): void {
  if (entry.kind === "message") {
    const message = entry.data as Message;
    messages.set(message.id, message); // keyed by id: the sender's own copy lands once
    applied.messages.push(message);
  } else if (entry.kind === "recall") {
    const data = entry.data as { message_id: number; from: string; to: string };
    // A recall takes effect at its entry's time: the server writes both in one transaction.
    const recall: Recall = { ...data, recalled_at: entry.created_at };
    const old = messages.get(recall.message_id) ?? state.messages.get(recall.message_id);
    if (old) messages.set(old.id, { ...old, body: "", recalled_at: recall.recalled_at });
    applied.recalls.push(recall);
  } else if (entry.kind === "read") {
    const receipt = entry.data as ReadReceipt;
    const key = readKey(receipt.reader, receipt.peer);
    const current = reads.get(key) ?? state.reads.get(key);
    if (!current || current.up_to_message_id < receipt.up_to_message_id) {
      reads.set(key, { reader: receipt.reader, peer: receipt.peer, up_to_message_id: receipt.up_to_message_id });
    }
    applied.reads.push(receipt);
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
    state.applied = [];
  }
  const meta = change.meta ?? {};
  if (meta.session !== undefined) state.session = meta.session;
  if (meta.cursor !== undefined) state.cursor = meta.cursor;
  if (meta.cursorId !== undefined) state.cursorId = meta.cursorId;
  if (meta.acked !== undefined) state.acked = meta.acked;
  if (meta.gaps !== undefined) state.gaps = meta.gaps;
  for (const m of change.messages ?? []) state.messages.set(m.id, m);
  for (const r of change.reads ?? []) state.reads.set(readKey(r.reader, r.peer), r);
  for (const a of change.applied ?? []) state.applied.push(a);
  for (const o of change.outbox ?? []) state.outbox.set(o.client_msg_id, o);
}

/** A store that lives as long as the process: tests, bots, short scripts. */
export class MemoryStore extends Store {
  protected async persist(_change: Change): Promise<void> {}
  close(): void {}
}
