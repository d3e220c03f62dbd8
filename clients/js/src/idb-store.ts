/** A durable store for browsers, on IndexedDB: one IndexedDB transaction per commit, so a
 * page's entries and its cursor are stored together or not at all (a closed tab or a
 * crash mid-page leaves the previous cursor, and the page is fetched again). */
import { type Change, Store, emptyState, readKey } from "./store.js";
import type { Message, OutboxItem, ReadReceipt, Session } from "./types.js";

const VERSION = 1;
const STORES = ["meta", "messages", "reads", "applied", "outbox"] as const;

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

interface Meta {
  session: Session | null;
  cursor: number;
  cursorId?: string | null; // absent in a store written before entry ids
  acked: number;
  gaps: number;
}

export class IndexedDbStore extends Store {
  private constructor(private readonly db: IDBDatabase) {
    super();
  }

  /** Open (or create) the database `name` and load it into memory. */
  static async open(
    name = "msgsync",
    factory: IDBFactory = indexedDB,
    options: { keepLog?: boolean } = {},
  ): Promise<IndexedDbStore> {
    const req = factory.open(name, VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("meta");
      db.createObjectStore("messages", { keyPath: "id" });
      db.createObjectStore("reads");
      db.createObjectStore("applied", { autoIncrement: true });
      db.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true });
    };
    const db = await request(req);
    const store = new IndexedDbStore(db);
    store.keepLog = options.keepLog ?? false;
    await store.load();
    return store;
  }

  private async load(): Promise<void> {
    const tx = this.db.transaction([...STORES], "readonly");
    const [meta, messages, reads, applied, outbox] = await Promise.all([
      request(tx.objectStore("meta").get("meta") as IDBRequest<Meta | undefined>),
      request(tx.objectStore("messages").getAll() as IDBRequest<Message[]>),
      request(tx.objectStore("reads").getAll() as IDBRequest<ReadReceipt[]>),
      request(tx.objectStore("applied").getAll() as IDBRequest<[number, string][]>),
      request(tx.objectStore("outbox").getAll() as IDBRequest<(OutboxItem & { seq: number })[]>),
    ]);
    const s = this.state;
    if (meta) {
      s.session = meta.session;
      s.cursor = meta.cursor;
      s.cursorId = meta.cursorId ?? null;
      s.acked = meta.acked;
      s.gaps = meta.gaps;
    }
    for (const m of messages) s.messages.set(m.id, m);
    for (const r of reads) s.reads.set(readKey(r.reader, r.peer), r);
    s.applied = applied;
    for (const o of outbox.sort((a, b) => a.seq - b.seq)) {
      const { seq: _seq, ...item } = o;
      s.outbox.set(item.client_msg_id, item);
      this.outboxSeq.set(item.client_msg_id, o.seq);
    }
  }

  private outboxSeq = new Map<string, number>();

  protected async persist(change: Change): Promise<void> {
    const tx = this.db.transaction([...STORES], "readwrite");
    const finished = done(tx);
    if (change.clear) {
      for (const name of STORES) tx.objectStore(name).clear();
    }
    if (change.resetStream) {
      tx.objectStore("messages").clear();
      tx.objectStore("reads").clear();
      tx.objectStore("applied").clear();
    }
    if (change.meta || change.clear) {
      const s = change.clear ? emptyState() : this.state;
      const meta: Meta = {
        session: change.meta?.session !== undefined ? change.meta.session : s.session,
        cursor: change.meta?.cursor ?? s.cursor,
        cursorId: change.meta?.cursorId !== undefined ? change.meta.cursorId : s.cursorId,
        acked: change.meta?.acked ?? s.acked,
        gaps: change.meta?.gaps ?? s.gaps,
      };
      tx.objectStore("meta").put(meta, "meta");
    }
    const messages = tx.objectStore("messages");
    for (const m of change.messages ?? []) messages.put(m);
    const reads = tx.objectStore("reads");
    for (const r of change.reads ?? []) reads.put(r, readKey(r.reader, r.peer));
    const applied = tx.objectStore("applied");
    for (const a of change.applied ?? []) applied.add(a);
    const outbox = tx.objectStore("outbox");
    // After a clear the old sends' keys go with their rows: a new map, in use once the
    // clear has committed (the key generator goes on counting, so creation order holds).
    const seqs = change.clear ? new Map<string, number>() : this.outboxSeq;
    const newSeqs: Promise<void>[] = [];
    for (const o of change.outbox ?? []) {
      const seq = seqs.get(o.client_msg_id);
      if (seq !== undefined) {
        outbox.put({ ...o, seq });
      } else {
        // A new send: its key is assigned in creation order, which the outbox keeps.
        const req = outbox.add({ ...o });
        newSeqs.push(request(req).then((key) => void seqs.set(o.client_msg_id, Number(key))));
      }
    }
    await finished;
    await Promise.all(newSeqs);
    this.outboxSeq = seqs;
  }

  close(): void {
    this.db.close();
  }
}
