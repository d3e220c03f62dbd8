import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import { Client } from "../src/client.js";
import { FileStore } from "../src/file-store.js";
import { IndexedDbStore } from "../src/idb-store.js";
import { MemoryStore, type Store } from "../src/store.js";
import type { Entry, GroupEvent, Message, SyncPage } from "../src/types.js";

const T = "2026-12-05T10:00:00Z";
const G = "g1";
const session = { server: "http://s", user_id: "bob", device_id: "d1", access_token: "t" };

function gmsg(id: number, seq: number, from = "alice", body = `m${id}`, group = G): Message {
  return { id, from, to: null, body, client_msg_id: null, created_at: T, recalled_at: null, group_id: group, seq };
}
function dmsg(id: number, from = "alice", to = "bob"): Message {
  return { id, from, to, body: `d${id}`, client_msg_id: null, created_at: T, recalled_at: null, group_id: null, seq: null };
}
function event(seq: number, kind: string, data: Record<string, unknown> = {}, actor = "alice"): GroupEvent {
  return { seq, kind, created_at: T, actor, data } as GroupEvent; // any kind: a newer server's too
}
function entry(version: number, kind: string, data: unknown): Entry {
  return { version, kind, data, created_at: T } as Entry;
}
const groupEntry = (version: number, ev: GroupEvent, group = G) => entry(version, "group", { group_id: group, event: ev });
const messageEntry = (version: number, m: Message) => entry(version, "message", m);
function page(entries: Entry[], hasMore = false): SyncPage {
  const last = entries.at(-1)?.version ?? 0;
  return { entries, next_since: last, latest_version: last, has_more: hasMore, history_fallback: false };
}
const groupDetails = (over: Record<string, unknown> = {}) => ({
  group_id: G, title: "Trip", owner: "alice", member_count: 3, latest_seq: 0, joined_seq: 1,
  read_seq: 0, large: false, created_at: T, ...over,
});

const kinds: [string, () => { open: () => Promise<Store> }][] = [
  ["memory", () => { const s = new MemoryStore(); return { open: async () => s }; }],
  ["file", () => {
    const path = join(mkdtempSync(join(tmpdir(), "msgsync-")), "store.json");
    return { open: async () => FileStore.open(path) };
  }],
  ["indexeddb", () => {
    const factory = new IDBFactory();
    return { open: () => IndexedDbStore.open("t", factory, { keepLog: true }) };
  }],
];

for (const [name, make] of kinds) {
  test(`${name}: a group from the stream: created, messages, title, read; kept apart from direct chats`, async () => {
    const { open } = make();
    const store = await open();
    await store.setSession(session);
    await store.applyPage(page([
      groupEntry(1, event(1, "created", { title: "Trip", members: ["alice", "bob"] })),
      messageEntry(2, gmsg(10, 2)),
      messageEntry(3, dmsg(11)),
      messageEntry(4, gmsg(12, 3, "bob")),
      groupEntry(5, event(4, "title_changed", { title: "Trip 2027" })),
      entry(6, "read", { reader: "bob", group_id: G, up_to_seq: 2 }),
      entry(7, "read", { reader: "bob", group_id: G, up_to_seq: 1 }), // never back
      entry(8, "future_kind", {}),
    ]));
    if (name !== "memory") store.close();
    const again = await open();
    const g = again.group(G);
    assert.ok(g);
    assert.deepEqual(
      [g.title, g.owner, g.role, g.seq, g.news, g.read_seq, g.stale, g.members, g.member_count],
      ["Trip 2027", "alice", "member", 4, 0, 2, false, { alice: "owner", bob: "member" }, 2],
    );
    assert.deepEqual(again.groupMessages(G).map((m) => m.id), [10, 12]);
    assert.deepEqual(again.messages("alice").map((m) => m.id), [11]);
    assert.equal(again.cursor, 8);
  });

  test(`${name}: an event past a gap marks news and waits for the log, which fills the gap in order, each event once`, async () => {
    const { open } = make();
    const store = await open();
    await store.setSession(session);
    await store.applyPage(page([groupEntry(1, event(1, "created", { title: "A" })), messageEntry(2, gmsg(10, 2))]));
    // Seq 3 and 4 are missing from the stream (pruned): 5 and 6 arrive, and wait for the
    // log (applied now, they would be applied twice, or out of order).
    const early = await store.applyPage(page([
      entry(3, "message", gmsg(14, 5)),
      groupEntry(4, event(6, "title_changed", { title: "C" })),
    ]));
    assert.deepEqual([early.count, early.messages], [2, []]);
    let g = store.group(G);
    assert.deepEqual([g?.seq, g?.news, g?.title], [2, 6, "A"]);
    assert.deepEqual(store.groupMessages(G).map((m) => m.id), [10]);
    // The log from seq 2: a title, a message, the events seen in the stream, a recall.
    const filled = await store.applyGroupEvents(G, {
      events: [
        event(3, "title_changed", { title: "B" }),
        event(4, "message", gmsg(13, 4) as unknown as Record<string, unknown>),
        event(5, "message", gmsg(14, 5) as unknown as Record<string, unknown>),
        event(6, "title_changed", { title: "C" }),
        event(7, "recall", { message_id: 14 }),
      ],
      next_after_seq: 7, latest_seq: 7, has_more: false,
    });
    assert.deepEqual(filled.messages.map((m) => m.seq), [4, 5]);
    if (name !== "memory") store.close();
    const again = await open();
    g = again.group(G);
    assert.deepEqual([g?.seq, g?.news, g?.title], [7, 0, "C"]);
    assert.deepEqual(again.groupMessages(G).map((m) => [m.id, m.body]), [[10, "m10"], [13, "m13"], [14, ""]]);
  });

  test(`${name}: removed from a group, the group and its messages are forgotten; clear and reset forget groups`, async () => {
    const { open } = make();
    const store = await open();
    await store.setSession(session);
    await store.applyPage(page([
      groupEntry(1, event(1, "created", { title: "A" })),
      groupEntry(2, event(1, "created", { title: "Other" }), "g2"),
      messageEntry(3, gmsg(10, 2)),
      messageEntry(4, dmsg(11)),
      groupEntry(5, event(3, "member_removed", { user_id: "bob" })),
      messageEntry(6, gmsg(12, 4)), // nothing of it after: even if a server sent one
    ]));
    assert.equal(store.group(G), undefined);
    assert.deepEqual(store.groupMessages(G), []);
    assert.deepEqual(store.groups().map((g) => g.group_id), ["g2"]);
    if (name !== "memory") store.close();
    const again = await open();
    assert.equal(again.group(G), undefined);
    assert.deepEqual(again.messages().map((m) => m.id), [11]);
    await again.resetStream();
    assert.deepEqual(again.groups(), []);
    await again.applyPage(page([groupEntry(1, event(1, "created", { title: "A" }))]));
    await again.clear();
    assert.deepEqual(again.groups(), []);
    if (name !== "memory") again.close();
    assert.deepEqual((await open()).groups(), []);
  });

  test(`${name}: a log read stays due until has_more is false, and every group_news asks for one`, async () => {
    const { open } = make();
    const store = await open();
    await store.setSession(session);
    await store.applyPage(page([groupEntry(1, event(1, "created", { title: "A", members: ["alice", "bob"] })), messageEntry(2, gmsg(10, 2))]));
    // News of a seq applied already (around a mode switch): a read is due all the same.
    await store.applyPage(page([entry(3, "group_news", { group_id: G, seq: 2 })]));
    assert.ok((store.group(G)?.news ?? 0) > (store.group(G)?.seq ?? 0));
    // The log has grown past the news: a page that says there is more keeps the read due.
    await store.applyGroupEvents(G, { events: [event(3, "message", gmsg(11, 3) as unknown as Record<string, unknown>)], next_after_seq: 3, latest_seq: 4, has_more: true });
    if (name !== "memory") store.close();
    const again = await open(); // a crash between two pages of the log
    let g = again.group(G);
    assert.ok(g && g.news > g.seq && g.seq === 3);
    await again.applyGroupEvents(G, { events: [event(4, "message", gmsg(12, 4) as unknown as Record<string, unknown>)], next_after_seq: 4, latest_seq: 4, has_more: false });
    g = again.group(G);
    assert.deepEqual([g?.seq, g?.news], [4, 0]);
    assert.deepEqual(again.groupMessages(G).map((m) => m.id), [10, 11, 12]);
  });

  test(`${name}: an event both in the log and in the stream (a mode switch) is applied once, in either order`, async () => {
    const { open } = make();
    const store = await open();
    await store.setSession(session);
    const seen: number[] = [];
    const heard = (a: { messages: Message[] }) => seen.push(...a.messages.map((m) => m.seq ?? 0));
    const logged = (...seqs: number[]) => seqs.map((n) => event(n, "message", gmsg(100 + n, n) as unknown as Record<string, unknown>));
    await store.applyPage(page([groupEntry(1, event(1, "created", { title: "A", members: ["alice", "bob"] }))]));
    // Small: the stream, in order.
    heard(await store.applyPage(page([messageEntry(2, gmsg(102, 2)), messageEntry(3, gmsg(103, 3))])));
    // Large: news, and a log read that starts before the position.
    heard(await store.applyPage(page([entry(4, "group_news", { group_id: G, seq: 5 })])));
    heard(await store.applyGroupEvents(G, { events: logged(2, 3, 4), next_after_seq: 4, latest_seq: 5, has_more: true }));
    // Small again before the read ended: the next event comes in the stream too, while a
    // read is due; the log then brings it as well.
    heard(await store.applyPage(page([messageEntry(5, gmsg(106, 6)), groupEntry(6, event(7, "member_added", { user_id: "carol" }))])));
    heard(await store.applyGroupEvents(G, { events: [...logged(5, 6), event(7, "member_added", { user_id: "carol" })], next_after_seq: 7, latest_seq: 7, has_more: false }));
    // The stream repeats what the log applied, then goes on in order.
    heard(await store.applyPage(page([groupEntry(7, event(7, "member_added", { user_id: "carol" })), messageEntry(8, gmsg(108, 8))])));
    assert.deepEqual(seen, [2, 3, 4, 5, 6, 8]);
    const g = store.group(G);
    assert.deepEqual([g?.seq, g?.news, g?.members], [8, 0, { alice: "owner", bob: "member", carol: "member" }]);
    assert.deepEqual(store.groupMessages(G).map((m) => m.seq), [2, 3, 4, 5, 6, 8]);
  });
}

test("indexeddb: a database of the version before groups opens with its data and gains groups", async () => {
  const factory = new IDBFactory();
  // The layout of version 1, as the SDK before groups created it.
  await new Promise<void>((resolve, reject) => {
    const req = factory.open("t", 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("meta").put({ session, cursor: 4, acked: 4, gaps: 0 }, "meta");
      db.createObjectStore("messages", { keyPath: "id" }).put(dmsg(1));
      db.createObjectStore("reads");
      db.createObjectStore("applied", { autoIncrement: true });
      db.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true });
    };
    req.onsuccess = () => {
      req.result.close();
      resolve();
    };
    req.onerror = () => reject(req.error);
  });
  const store = await IndexedDbStore.open("t", factory);
  assert.equal(store.cursor, 4);
  assert.deepEqual(store.messages().map((m) => m.id), [1]);
  await store.applyPage(page([groupEntry(5, event(1, "created", { title: "A" }))]));
  store.close();
  assert.equal((await IndexedDbStore.open("t", factory)).group(G)?.seq, 1);
});

// -- the client against a scripted server --------------------------------------------------

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
type Route = (url: URL, body: Record<string, unknown> | null, n: number) => Response | Promise<Response>;

function server(routes: Record<string, Route>) {
  const calls: { method: string; path: string; body: Record<string, unknown> | null }[] = [];
  const counts = new Map<string, number>();
  const fetchImpl: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    const body = init?.body ? (JSON.parse(String(init.body)) as Record<string, unknown>) : null;
    const method = init?.method ?? "GET";
    calls.push({ method, path: url.pathname + url.search, body });
    const key = `${method} ${url.pathname}`;
    const n = (counts.get(key) ?? 0) + 1;
    counts.set(key, n);
    const route = routes[key];
    if (!route) throw new TypeError("fetch failed");
    return route(url, body, n);
  };
  return { calls, fetchImpl };
}

const fast = { backoffBase: 0.001, backoffCap: 0.002, ackDelay: 0.01 };
async function client(fetchImpl: typeof fetch, store: Store = new MemoryStore()) {
  await store.setSession(session);
  return new Client(store, null, fast, {}, fetchImpl);
}
/** The group's log, seq 1..n: created, then messages from alice. */
const log = (n: number): GroupEvent[] =>
  Array.from({ length: n }, (_, i) =>
    i === 0 ? event(1, "created", { title: "Trip" }) : event(i + 1, "message", gmsg(100 + i, i + 1) as unknown as Record<string, unknown>));
/** Three members, two to a page. */
const membersRoute: Route = (url) => {
  const all = [["alice", "owner"], ["bob", "member"], ["carol", "admin"]].map(([user_id, role]) => ({ user_id, role, joined_seq: 1, read_seq: 0 }));
  const after = url.searchParams.get("after");
  const rest = all.filter((m) => after === null || (m.user_id ?? "") > after).slice(0, 2);
  const more = rest.length === 2 && rest[1]?.user_id !== "carol";
  return json(200, { members: rest, next_after: more ? rest.at(-1)?.user_id : null });
};
function eventsRoute(events: GroupEvent[], joinedSeq = 1): Route {
  return (url) => {
    const after = url.searchParams.has("after_seq") ? Number(url.searchParams.get("after_seq")) : joinedSeq - 1;
    const limit = Number(url.searchParams.get("limit"));
    const slice = events.filter((e) => e.seq > after).slice(0, limit);
    const latest = events.at(-1)?.seq ?? 0;
    const next = slice.at(-1)?.seq ?? after;
    return json(200, { events: slice, next_after_seq: next, latest_seq: latest, has_more: next < latest });
  };
}

test("group_news: the log is read from the group's position until has_more is false, each page with its position", async () => {
  const events = log(25);
  const { calls, fetchImpl } = server({
    "GET /sync": (_u, _b, n) => json(200, n === 1
      ? page([entry(1, "group_news", { group_id: G, seq: 12 })])
      : page([entry(2, "group_news", { group_id: G, seq: 25 })])),
    "GET /groups/g1/events": eventsRoute(events),
    "GET /groups/g1": () => json(200, { group: groupDetails({ latest_seq: 25 }) }),
    "GET /groups/g1/members": membersRoute,
    "POST /ack": (_u, b) => json(200, { device_id: "d1", acked_version: b?.["version"] }),
  });
  const c = new Client(new MemoryStore(), "http://s", { ...fast, pageLimit: 10 }, {}, fetchImpl);
  await c.store.setSession(session);
  const heard: number[] = [];
  c.handlers.onMessages = (ms) => heard.push(...ms.map((m) => m.id));
  const first = await c.catchUp();
  // Pages of 10 until has_more is false: the log's latest (25), past the news' 12.
  assert.equal(first.groupPages, 3);
  assert.deepEqual(calls.filter((x) => x.path.startsWith("/groups/g1/events")).map((x) => new URL(x.path, "http://s").searchParams.get("after_seq")), [null, "10", "20"]);
  const g = c.store.group(G);
  assert.deepEqual([g?.seq, g?.news, g?.title, g?.stale], [25, 0, "Trip", false]);
  // The log's created event did not list the members: the whole list was fetched, by pages.
  assert.deepEqual(g?.members, { alice: "owner", bob: "member", carol: "admin" });
  assert.deepEqual(calls.filter((x) => x.path.startsWith("/groups/g1/members")).map((x) => new URL(x.path, "http://s").searchParams.get("after")), [null, "bob"]);
  assert.deepEqual(c.store.groupMessages(G).map((m) => m.seq), Array.from({ length: 24 }, (_, i) => i + 2));
  assert.deepEqual(heard, Array.from({ length: 24 }, (_, i) => 101 + i));
  // News of a seq the log has passed already still asks for a read to the end (the server
  // counts its news as covered only then): one page, nothing new in it.
  const second = await c.catchUp();
  assert.equal(second.groupPages, 1);
  assert.equal(calls.filter((x) => x.path.startsWith("/groups/g1/events")).at(-1)?.path.includes("after_seq=25"), true);
  assert.equal(heard.length, 24);
  await c.close();
});

test("news stored with its page survives a crash before the log is read; the next start reads it", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "msgsync-")), "store.json");
  let logUp = false;
  const { fetchImpl } = server({
    "GET /sync": (url) => json(200, url.searchParams.get("since") === "0"
      ? page([groupEntry(1, event(1, "created", { title: "Trip" })), entry(2, "group_news", { group_id: G, seq: 3 })])
      : { entries: [], next_since: 2, latest_version: 2, has_more: false, history_fallback: false }),
    "GET /groups/g1/events": (url, b, n) => (logUp ? eventsRoute(log(3))(url, b, n) : json(503, { code: "database_unavailable" })),
    "GET /groups/g1": () => json(200, { group: groupDetails() }),
    "GET /groups/g1/members": membersRoute,
    "POST /ack": (_u, b) => json(200, { device_id: "d1", acked_version: b?.["version"] }),
  });
  const first = new Client(FileStore.open(path), "http://s", { ...fast, syncAttempts: 2 }, {}, fetchImpl);
  await first.store.setSession(session);
  await assert.rejects(first.catchUp(), /group read failed/);
  await first.close(false);
  // The page (and its news) is stored; the log is not read yet.
  const stored = FileStore.open(path);
  assert.deepEqual([stored.cursor, stored.group(G)?.seq, stored.group(G)?.news], [2, 1, 3]);
  logUp = true;
  const second = new Client(stored, null, fast, {}, fetchImpl);
  const r = await second.catchUp();
  assert.equal(r.groupPages, 1);
  assert.deepEqual(second.store.groupMessages(G).map((m) => m.seq), [2, 3]);
  assert.equal(FileStore.open(path).group(G)?.news, 0);
  await second.close();
});

test("a log answered 404 group_not_found forgets the group; another refusal does not stop the stream", async () => {
  const { fetchImpl } = server({
    "GET /sync": () => json(200, page([
      entry(1, "group_news", { group_id: G, seq: 3 }),
      entry(2, "group_news", { group_id: "g2", seq: 3 }),
      messageEntry(3, dmsg(7)),
    ])),
    "GET /groups/g1/events": () => json(404, { code: "group_not_found" }),
    "GET /groups/g1": () => json(404, { code: "group_not_found" }),
    "GET /groups/g2/events": () => json(422, { code: "validation_error" }),
    "GET /groups/g2": () => json(200, { group: groupDetails({ group_id: "g2" }) }),
    "GET /groups/g2/members": membersRoute,
  });
  const c = await client(fetchImpl);
  const r = await c.catchUp();
  assert.equal(r.cursor, 3);
  assert.equal(c.store.group(G), undefined);
  assert.equal(c.store.group("g2")?.news, 3); // still to read, next time
  assert.deepEqual(c.store.messages().map((m) => m.id), [7]);
  await c.close(false);
});

test("a group send goes through the outbox and keeps its client_msg_id across retries", async () => {
  const { calls, fetchImpl } = server({
    "POST /groups/g1/messages": (_u, b, n) => n < 3
      ? json(503, { code: "database_unavailable" })
      : json(201, { message: gmsg(40, 9, "bob", String(b?.["body"])), version: 5 }),
  });
  const c = await client(fetchImpl);
  const item = await c.sendGroup(G, "hello all");
  const ids = calls.map((x) => x.body?.["client_msg_id"]);
  assert.equal(ids.length, 3);
  assert.equal(new Set(ids).size, 1);
  assert.deepEqual([item.state, item.message_id, item.group_id, item.to], ["sent", 40, G, null]);
  assert.deepEqual(calls[0]?.body, { body: "hello all", client_msg_id: item.client_msg_id });
});

test("createGroup retries with one client_group_id and stores the group; readGroup moves the cursor", async () => {
  const { calls, fetchImpl } = server({
    "POST /groups": (_u, _b, n) => n === 1 ? json(503, { code: "database_unavailable" }) : json(n === 2 ? 201 : 200, { group: groupDetails({ owner: "bob" }), version: 3 }),
    "POST /groups/g1/read": (_u, b) => json(200, { group_id: G, read_seq: b?.["up_to_seq"], version: 4 }),
  });
  const c = await client(fetchImpl);
  const group = await c.createGroup("Trip", ["alice", "carol"]);
  assert.equal(group.group_id, G);
  const creates = calls.filter((x) => x.path === "/groups");
  assert.equal(creates.length, 2);
  assert.equal(creates[0]?.body?.["client_group_id"], creates[1]?.body?.["client_group_id"]);
  assert.deepEqual(creates[0]?.body?.["members"], ["alice", "carol"]);
  const g = c.store.group(G);
  assert.deepEqual([g?.title, g?.owner, g?.member_count, g?.seq], ["Trip", "bob", 3, 0]);
  // The created event then lands on the group as its first position, and names everyone.
  await c.store.applyPage(page([groupEntry(1, event(1, "created", { title: "Trip", members: ["bob", "alice", "carol"] }, "bob"))]));
  const created = c.store.group(G);
  assert.deepEqual([created?.seq, created?.news, created?.stale, created?.role], [1, 0, false, "owner"]);
  assert.deepEqual(created?.members, { bob: "owner", alice: "member", carol: "member" });
  assert.equal(await c.readGroup(G, 6), 6);
  assert.equal(c.store.group(G)?.read_seq, 6);
});

test("leaving forgets the group here, even when a lost answer makes the retry a 404", async () => {
  const { fetchImpl } = server({
    "DELETE /groups/g1/members/bob": () => json(404, { code: "group_not_found" }),
    "GET /groups/g1/members": () => json(200, { members: [], next_after: null }),
  });
  const c = await client(fetchImpl);
  await c.store.applyPage(page([groupEntry(1, event(1, "created", { title: "Trip" })), messageEntry(2, gmsg(10, 2))]));
  await c.leaveGroup(G);
  assert.deepEqual([c.store.groups(), c.store.groupMessages(G)], [[], []]);
});

test("group_news entries sharing the floor's version each count (a sync below the floor)", async () => {
  const store = new MemoryStore();
  await store.setSession(session);
  await store.applyPage({
    entries: [
      entry(5, "group_news", { group_id: G, seq: 4 }),
      entry(5, "group_news", { group_id: "g2", seq: 9 }),
      messageEntry(6, dmsg(1)),
      messageEntry(6, dmsg(2)), // any other kind: each version once
    ],
    next_since: 6, latest_version: 6, has_more: false, history_fallback: true,
  });
  assert.deepEqual(store.groups().map((g) => [g.group_id, g.news, g.stale]), [[G, 4, true], ["g2", 9, true]]);
  assert.deepEqual(store.messages().map((m) => m.id), [1]);
});

test("a large group: every group_news is followed by a log read to its end; messages reach the app once, in seq order", async () => {
  // The group switches to large after seq 3 and back to small at seq 9 (the member who
  // left is named in the log); the log grows while the member reads it.
  const events = log(12);
  let latest = 3;
  const visible = () => events.filter((e) => e.seq <= latest);
  const { calls, fetchImpl } = server({
    "GET /sync": (url) => {
      const since = Number(url.searchParams.get("since"));
      const stream: Entry[] = [
        groupEntry(1, events[0] as GroupEvent),
        messageEntry(2, gmsg(101, 2)),
        messageEntry(3, gmsg(102, 3)),
        entry(4, "group_news", { group_id: G, seq: 5 }),
        entry(5, "group_news", { group_id: G, seq: 9 }),
        messageEntry(6, gmsg(108, 9)), // the switch back: both in the log and in the stream
        messageEntry(7, gmsg(109, 10)),
      ];
      const entries = stream.filter((e) => e.version > since).slice(0, 2);
      const last = entries.at(-1)?.version ?? since;
      latest = Math.min(12, [3, 3, 3, 6, 10, 10, 10][last - 1] ?? latest);
      return json(200, { entries, next_since: last, latest_version: 7, has_more: last < 7, history_fallback: false });
    },
    "GET /groups/g1/events": (url, b, n) => eventsRoute(visible())(url, b, n),
    "GET /groups/g1": () => json(200, { group: groupDetails({ latest_seq: latest, large: true }) }),
    "GET /groups/g1/members": membersRoute,
    "POST /ack": (_u, b) => json(200, { device_id: "d1", acked_version: b?.["version"] }),
  });
  const c = new Client(new MemoryStore(), "http://s", { ...fast, pageLimit: 2 }, {}, fetchImpl);
  await c.store.setSession(session);
  const heard: number[] = [];
  c.handlers.onMessages = (ms) => heard.push(...ms.map((m) => m.seq ?? 0));
  await c.catchUp();
  assert.deepEqual(heard, [2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(c.store.groupMessages(G).map((m) => m.seq), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const g = c.store.group(G);
  assert.deepEqual([g?.seq, g?.news], [10, 0]);
  // Each read went on until has_more was false.
  const reads = calls.filter((x) => x.path.startsWith("/groups/g1/events"));
  assert.ok(reads.length >= 2);
  await c.close();
});
