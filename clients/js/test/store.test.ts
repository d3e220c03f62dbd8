import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import { FileStore } from "../src/file-store.js";
import { IndexedDbStore } from "../src/idb-store.js";
import { MemoryStore, type Store } from "../src/store.js";
import type { Entry, Message, SyncPage } from "../src/types.js";

const T = "2026-11-27T10:00:00Z";

function msg(id: number, from = "alice", to = "bob", body = `m${id}`): Message {
  return { id, from, to, body, client_msg_id: null, created_at: T, recalled_at: null };
}
// Entry is a union discriminated on kind: the helper builds any pairing (an unknown kind too).
function entry(version: number, kind: Entry["kind"], data: Entry["data"]): Entry {
  return { version, id: `e${version}`, kind, data, created_at: T } as Entry;
}
function page(entries: Entry[], next_since?: number, history_fallback = false): SyncPage {
  const last = entries.at(-1)?.version ?? 0;
  return { entries, next_since: next_since ?? last, latest_version: next_since ?? last, has_more: false, history_fallback };
}

const session = { server: "http://x", user_id: "bob", device_id: "d1", access_token: "t" };

const kinds: [string, () => Promise<{ open: () => Promise<Store> }>][] = [
  ["memory", async () => { const s = new MemoryStore(); return { open: async () => s }; }],
  ["file", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "msgsync-")), "store.json");
    return { open: async () => FileStore.open(path) };
  }],
  ["indexeddb", async () => {
    const factory = new IDBFactory();
    return { open: () => IndexedDbStore.open("t", factory, { keepLog: true }) };
  }],
];

for (const [name, make] of kinds) {
  test(`${name}: a page applies each version once, in order, with its cursor`, async () => {
    const { open } = await make();
    const store = await open();
    await store.setSession(session);
    await store.applyPage(page([entry(1, "message", msg(1)), entry(2, "message", msg(2))]));
    // A repeated version (a retried page) is skipped; a recall blanks its message.
    const applied = await store.applyPage(
      page([entry(2, "message", msg(2)), entry(3, "recall", { message_id: 1, from: "alice", to: "bob" })]),
    );
    assert.equal(applied.count, 1);
    assert.deepEqual(store.applied(), [[1, "message"], [2, "message"], [3, "recall"]]);
    assert.equal(store.cursor, 3);
    const [first] = store.messages();
    assert.equal(first?.body, "");
    assert.equal(first?.recalled_at, T);
  });

  test(`${name}: the cursor keeps the id of its entry, across reopening; a reset forgets it`, async () => {
    const { open } = await make();
    const store = await open();
    await store.setSession(session);
    assert.equal(store.cursorId, null);
    await store.applyPage(page([entry(1, "message", msg(1)), entry(2, "message", msg(2))]));
    assert.equal(store.cursorId, "e2");
    // An empty page at the same cursor (a long-poll's timeout) keeps it.
    await store.applyPage(page([], 2));
    assert.equal(store.cursorId, "e2");
    if (name !== "memory") store.close();
    const again = await open();
    assert.deepEqual([again.cursor, again.cursorId], [2, "e2"]);
    // next_since past the last entry: no entry to name, so none is sent.
    await again.applyPage(page([entry(3, "message", msg(3))], 5));
    assert.deepEqual([again.cursor, again.cursorId], [5, null]);
    await again.applyPage(page([entry(6, "message", msg(6))]));
    assert.equal(again.cursorId, "e6");
    await again.resetStream();
    assert.deepEqual([again.cursor, again.cursorId], [0, null]);
  });

  test(`${name}: receipts keep the highest, next_since jumps, unknown kinds pass, gaps count`, async () => {
    const { open } = await make();
    const store = await open();
    await store.setSession(session);
    await store.applyPage(page([
      entry(1, "read", { reader: "alice", peer: "bob", up_to_message_id: 5 }),
      entry(2, "read", { reader: "alice", peer: "bob", up_to_message_id: 3 }),
      entry(3, "future" as Entry["kind"], msg(9)),
    ], 10, true));
    assert.deepEqual(store.reads(), [{ reader: "alice", peer: "bob", up_to_message_id: 5 }]);
    assert.equal(store.cursor, 10);
    assert.equal(store.gaps, 1);
    assert.deepEqual(store.messages(), []);
  });

  test(`${name}: state survives reopening; a reset keeps the session and the outbox`, async () => {
    const { open } = await make();
    const store = await open();
    await store.setSession(session);
    await store.putOutbox({ client_msg_id: "a", to: "alice", body: "x", state: "pending", message_id: null, error: null });
    await store.putOutbox({ client_msg_id: "b", to: "alice", body: "y", state: "pending", message_id: null, error: null });
    await store.putOutbox({ client_msg_id: "a", to: "alice", body: "x", state: "sent", message_id: 7, error: null });
    await store.applyPage(page([entry(1, "message", msg(1, "bob", "alice"))]));
    await store.setAcked(1);
    if (name !== "memory") store.close();
    const again = await open();
    assert.equal(again.cursor, 1);
    assert.equal(again.acked, 1);
    assert.deepEqual(again.session, session);
    assert.deepEqual(again.messages("alice").map((m) => m.id), [1]);
    assert.deepEqual(again.outbox().map((o) => [o.client_msg_id, o.state]), [["a", "sent"], ["b", "pending"]]);
    await again.resetStream();
    assert.equal(again.cursor, 0);
    assert.deepEqual(again.messages(), []);
    assert.deepEqual(again.applied(), []);
    assert.equal(again.outbox().length, 2);
    assert.deepEqual(again.session, session);
  });

  test(`${name}: clear forgets everything, on the medium too; the store is usable after`, async () => {
    const { open } = await make();
    const store = await open();
    await store.setSession(session);
    await store.putOutbox({ client_msg_id: "a", to: "alice", body: "x", state: "pending", message_id: null, error: null });
    await store.applyPage(page([
      entry(1, "message", msg(1, "alice", "bob")),
      entry(2, "read", { reader: "alice", peer: "bob", up_to_message_id: 1 }),
    ], 4, true));
    await store.setAcked(2);
    await store.clear();
    const empty = (s: Store) => {
      assert.equal(s.session, null);
      assert.deepEqual([s.cursor, s.acked, s.gaps], [0, 0, 0]);
      assert.deepEqual([s.messages(), s.reads(), s.applied(), s.outbox()], [[], [], [], []]);
    };
    empty(store);
    if (name !== "memory") store.close();
    const again = await open();
    empty(again);
    // A new user's sends keep their creation order after the clear.
    await again.putOutbox({ client_msg_id: "b", to: "carol", body: "y", state: "pending", message_id: null, error: null });
    await again.putOutbox({ client_msg_id: "c", to: "carol", body: "z", state: "pending", message_id: null, error: null });
    await again.putOutbox({ client_msg_id: "b", to: "carol", body: "y", state: "sent", message_id: 3, error: null });
    if (name !== "memory") again.close();
    const third = await open();
    assert.deepEqual(third.outbox().map((o) => [o.client_msg_id, o.state]), [["b", "sent"], ["c", "pending"]]);
  });

  test(`${name}: commits land one at a time, in the order asked`, async () => {
    const { open } = await make();
    const store = await open();
    await store.setSession(session);
    await store.applyPage(page([entry(1, "message", msg(1))]));
    // Asked in the same turn: a clear, then an ack. The ack must not write back the
    // state from before the clear (a FileStore writes the whole state each time).
    const clearing = store.clear();
    const acking = store.setAcked(1);
    await Promise.all([clearing, acking]);
    if (name !== "memory") store.close();
    const again = await open();
    assert.equal(again.session, null);
    assert.deepEqual(again.messages(), []);
  });
}

test("indexeddb: a page whose commit fails leaves memory and disk at the old cursor", async () => {
  const factory = new IDBFactory();
  const store = await IndexedDbStore.open("t", factory);
  await store.applyPage(page([entry(1, "message", msg(1))]));
  await assert.rejects(store.applyPage(page([entry(2, "message", msg(2))]), () => {
    throw new Error("crash before commit");
  }));
  assert.equal(store.cursor, 1);
  store.close();
  const again = await IndexedDbStore.open("t", factory);
  assert.equal(again.cursor, 1);
  assert.deepEqual(again.messages().map((m) => m.id), [1]);
});

test("indexeddb: the applied log is off by default (a browser never reads it)", async () => {
  const store = await IndexedDbStore.open("t", new IDBFactory());
  await store.applyPage(page([entry(1, "message", msg(1))]));
  assert.deepEqual(store.applied(), []);
  assert.equal(store.cursor, 1);
});
