/** A durable store for Node: the whole state as one JSON file, replaced atomically
 * (write a temporary file, fsync, rename), so each commit is one transaction: a crash
 * leaves the old file or the new one, never half of a page. Node only (import it from
 * "msgsync-client/file-store"); browsers use IndexedDbStore. */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { type Change, Store, applyChange, emptyState, readKey, type StoreState } from "./store.js";
import type { Message, OutboxItem, ReadReceipt, Session } from "./types.js";

interface Snapshot {
  session: Session | null;
  cursor: number;
  cursorId?: string | null; // absent in a file written before entry ids
  acked: number;
  gaps: number;
  messages: Message[];
  reads: ReadReceipt[];
  applied: [number, string][];
  outbox: OutboxItem[];
}

export class FileStore extends Store {
  private constructor(private readonly path: string) {
    super();
  }

  static open(path: string): FileStore {
    const store = new FileStore(path);
    let text: string | null = null;
    try {
      text = readFileSync(path, "utf8");
    } catch (exc) {
      if ((exc as NodeJS.ErrnoException).code !== "ENOENT") throw exc;
    }
    if (text !== null) store.state = fromSnapshot(JSON.parse(text) as Snapshot);
    return store;
  }

  protected async persist(change: Change): Promise<void> {
    const next = cloneState(this.state);
    applyChange(next, change);
    // A name of this process's own: a process being killed may still be writing its file,
    // and a shared name would let it rename away the file its successor just wrote.
    const tmp = `${this.path}.${process.pid}.tmp`;
    // The session holds a bearer token: readable by the user only.
    const fd = openSync(tmp, "w", 0o600);
    try {
      writeSync(fd, JSON.stringify(toSnapshot(next)));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }

  close(): void {}
}

function cloneState(s: StoreState): StoreState {
  return {
    ...s,
    messages: new Map(s.messages),
    reads: new Map(s.reads),
    applied: [...s.applied],
    outbox: new Map(s.outbox),
  };
}

function toSnapshot(s: StoreState): Snapshot {
  return {
    session: s.session,
    cursor: s.cursor,
    cursorId: s.cursorId,
    acked: s.acked,
    gaps: s.gaps,
    messages: [...s.messages.values()],
    reads: [...s.reads.values()],
    applied: s.applied,
    outbox: [...s.outbox.values()],
  };
}

function fromSnapshot(snap: Snapshot): StoreState {
  const state = emptyState();
  state.session = snap.session;
  state.cursor = snap.cursor;
  state.cursorId = snap.cursorId ?? null;
  state.acked = snap.acked;
  state.gaps = snap.gaps;
  for (const m of snap.messages) state.messages.set(m.id, m);
  for (const r of snap.reads) state.reads.set(readKey(r.reader, r.peer), r);
  state.applied = snap.applied;
  for (const o of snap.outbox) state.outbox.set(o.client_msg_id, o);
  return state;
}
