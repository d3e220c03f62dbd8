import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Client } from "../src/client.js";
import { NotLoggedIn, Unauthorized } from "../src/errors.js";
import { FileStore } from "../src/file-store.js";
import { type Change, MemoryStore } from "../src/store.js";
import type { Message } from "../src/types.js";

/** A scripted server: answers by path, records what was asked and what the store held. */
function server(routes: Record<string, (body: unknown, n: number) => Response>) {
  const calls: { path: string; body: unknown }[] = [];
  const counts = new Map<string, number>();
  const fetchImpl: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    const body = init?.body ? JSON.parse(String(init.body)) : null;
    calls.push({ path: url.pathname + url.search, body });
    const n = (counts.get(url.pathname) ?? 0) + 1;
    counts.set(url.pathname, n);
    const route = routes[`${init?.method} ${url.pathname}`];
    if (!route) throw new TypeError("fetch failed");
    return route(body, n);
  };
  return { calls, fetchImpl };
}
const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

async function loggedIn(fetchImpl: typeof fetch, options = {}) {
  const store = new MemoryStore();
  await store.setSession({ server: "http://s", user_id: "alice", device_id: "d", access_token: "t" });
  return new Client(store, null, { backoffBase: 0.001, backoffCap: 0.002, ...options }, {}, fetchImpl);
}

test("a send is in the outbox before its first attempt and keeps its id across retries", async () => {
  let store: MemoryStore | null = null;
  const seen: unknown[] = [];
  const { calls, fetchImpl } = server({
    "POST /messages": (body, n) => {
      seen.push(store?.outbox().map((o) => o.state));
      if (n === 1) return json(503, { code: "database_unavailable" });
      return json(201, { message: { id: 4, from: "alice", to: "bob", body: "hi", client_msg_id: null, created_at: "t", recalled_at: null }, version: 1 });
    },
  });
  const client = await loggedIn(fetchImpl);
  store = client.store as MemoryStore;
  const item = await client.send("bob", "hi");
  assert.deepEqual(seen, [["pending"], ["pending"]]);
  const ids = calls.map((c) => (c.body as { client_msg_id: string }).client_msg_id);
  assert.equal(ids.length, 2);
  assert.equal(ids[0], ids[1]);
  assert.equal(item.state, "sent");
  assert.equal(item.message_id, 4);
});

test("a 4xx send is failed at once, not retried", async () => {
  const { calls, fetchImpl } = server({
    "POST /messages": () => json(404, { code: "recipient_not_found", detail: "no" }),
  });
  const client = await loggedIn(fetchImpl);
  const item = await client.send("nobody", "hi");
  assert.equal(item.state, "failed");
  assert.equal(item.error, "recipient_not_found");
  assert.equal(calls.length, 1);
});

test("a catch-up of many pages sends one ack per ack_every entries, the last at the cursor", async () => {
  const entries = (from: number) =>
    Array.from({ length: 10 }, (_, i) => ({
      version: from + i, kind: "read", created_at: "t",
      data: { reader: "bob", peer: "alice", up_to_message_id: from + i },
    }));
  const { calls, fetchImpl } = server({
    "GET /sync": (_b, n) => json(200, {
      entries: entries((n - 1) * 10 + 1), next_since: n * 10, latest_version: 50,
      has_more: n < 5, history_fallback: false,
    }),
    "POST /ack": (body) => json(200, { device_id: "d", acked_version: (body as { version: number }).version }),
  });
  const client = await loggedIn(fetchImpl, { ackEvery: 20, ackDelay: 0.05, pageLimit: 10 });
  const result = await client.catchUp();
  assert.equal(result.pages, 5);
  assert.equal(await client.flushAcks(), 50);
  const acks = calls.filter((c) => c.path === "/ack").map((c) => (c.body as { version: number }).version);
  assert.ok(acks.length <= 3, `acks: ${acks}`);
  assert.equal(acks.at(-1), 50);
  assert.equal(client.store.acked, 50);
  await client.close();
});

test("since_ahead forgets the stream and syncs from 0; a 401 ends the session", async () => {
  const { calls, fetchImpl } = server({
    "GET /sync": (_b, n) => {
      if (n === 1) return json(409, { code: "since_ahead", latest_version: 1 });
      if (n === 2) return json(200, { entries: [], next_since: 1, latest_version: 1, has_more: false, history_fallback: false });
      return json(401, { code: "unauthorized" });
    },
  });
  const client = await loggedIn(fetchImpl);
  await client.store.commit({ meta: { cursor: 9 } });
  const result = await client.catchUp();
  assert.equal(result.recovered, true);
  assert.deepEqual(calls.map((c) => new URL(c.path, "http://s").searchParams.get("since")), ["9", "0"]);
  assert.equal(client.store.cursor, 1);
  await assert.rejects(client.catchUp(), Unauthorized);
  await client.close(false);
});

test("history_rewritten: the cursor's since_id is refused, the stream is forgotten and synced from 0", async () => {
  const vanished: Message = { id: 7, from: "bob", to: "alice", body: "vanished", client_msg_id: null, created_at: "t", recalled_at: null };
  const kept: Message = { ...vanished, body: "the server's message 7" };
  const resets: number[] = [];
  const { calls, fetchImpl } = server({
    "GET /sync": (_b, n) => {
      if (n === 1) return json(409, { code: "history_rewritten", latest_version: 3 });
      return json(200, {
        entries: [{ version: 1, id: "new1", kind: "message", created_at: "t", data: kept }],
        next_since: 1, latest_version: 1, has_more: false, history_fallback: false,
      });
    },
  });
  const client = await loggedIn(fetchImpl);
  client.handlers.onReset = (latest) => resets.push(latest);
  await client.store.applyPage({
    entries: [{ version: 2, id: "old2", kind: "message", created_at: "t", data: vanished }],
    next_since: 2, latest_version: 2, has_more: false, history_fallback: false,
  });
  await client.store.putOutbox({ client_msg_id: "c", to: "bob", body: "unsent", state: "pending", message_id: null, error: null });
  const result = await client.catchUp();
  assert.equal(result.recovered, true);
  assert.deepEqual(resets, [3]);
  const asked = calls.map((c) => new URL(c.path, "http://s").searchParams);
  assert.deepEqual(asked.map((q) => [q.get("since"), q.get("since_id")]), [["2", "old2"], ["0", null]]);
  assert.deepEqual(client.store.messages().map((m) => m.body), ["the server's message 7"]);
  assert.deepEqual([client.store.cursor, client.store.cursorId], [1, "new1"]);
  assert.deepEqual(client.store.outbox().map((o) => o.state), ["pending"]);
  await client.close(false);
});

test("post() delivers the outbox one send at a time, in the order written", async () => {
  let inFlight = 0;
  let most = 0;
  const order: string[] = [];
  let id = 0;
  const { fetchImpl } = server({
    "POST /messages": (body) => {
      const { body: text } = body as { body: string };
      inFlight += 1;
      most = Math.max(most, inFlight);
      order.push(text);
      id += 1;
      const answer = json(201, { message: { id, from: "alice", to: "bob", body: text, client_msg_id: null, created_at: "t", recalled_at: null }, version: id });
      return answer;
    },
  });
  // Each answer resolves on a later turn, so parallel deliveries would overlap.
  const slow: typeof fetch = async (input, init) => {
    await new Promise((r) => setTimeout(r, 5));
    const answer = await fetchImpl(input, init);
    await new Promise((r) => setTimeout(r, 5));
    inFlight -= 1;
    return answer;
  };
  const client = await loggedIn(slow);
  const sent = new Promise<void>((resolve) => {
    client.handlers.onOutbox = () => {
      if (client.store.outbox().every((o) => o.state === "sent")) resolve();
    };
  });
  const texts = ["one", "two", "three", "four"];
  for (const text of texts) await client.post("bob", text);
  await sent;
  assert.deepEqual(order, texts);
  assert.equal(most, 1);
  assert.deepEqual(client.store.outbox().map((o) => o.message_id), [1, 2, 3, 4]);
});

/** A scripted server that knows users: each login gets a token, and GET /sync answers the
 * token's user's entries above `since`. `gate` holds the answers to the paths it names. */
function accounts(streams: Record<string, Message[]>, logout: "ok" | "503" | "unreachable" = "ok") {
  const calls: { path: string; user: string | null; body: unknown }[] = [];
  const tokens = new Map<string, string>();
  const gates = new Map<string, Promise<void>>();
  const fetchImpl: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    const auth = new Headers(init?.headers).get("authorization")?.slice("Bearer ".length) ?? "";
    const user = tokens.get(auth) ?? null;
    const body = init?.body ? JSON.parse(String(init.body)) : null;
    calls.push({ path: url.pathname + url.search, user, body });
    const gate = gates.get(url.pathname);
    const route = `${init?.method} ${url.pathname}`;
    if (route === "POST /login") {
      const token = `t${tokens.size + 1}`;
      tokens.set(token, body.user_id);
      return json(200, { user_id: body.user_id, device_id: `d${tokens.size}`, access_token: token });
    }
    if (!user) return json(401, { code: "unauthorized" });
    if (route === "POST /logout") {
      if (logout === "unreachable") throw new TypeError("fetch failed");
      if (logout === "503") return json(503, { code: "database_unavailable" });
      tokens.delete(auth);
      return new Response(null, { status: 204 });
    }
    if (route === "GET /sync") {
      const since = Number(url.searchParams.get("since"));
      const mine = streams[user] ?? [];
      const entries = mine.map((m, i) => ({ version: i + 1, kind: "message", created_at: "t", data: m }))
        .filter((e) => e.version > since);
      const answer = json(200, { entries, next_since: Math.max(since, mine.length), latest_version: mine.length, has_more: false, history_fallback: false });
      if (gate) await gate;
      return answer;
    }
    if (route === "POST /messages") {
      if (gate) await gate;
      const message = { id: 99, from: user, to: body.to, body: body.body, client_msg_id: body.client_msg_id, created_at: "t", recalled_at: null };
      return json(201, { message, version: 99 });
    }
    if (route === "POST /ack") return json(200, { device_id: "d", acked_version: body.version });
    throw new TypeError("fetch failed");
  };
  return { calls, fetchImpl, gates };
}
const message = (id: number, from: string, to: string): Message =>
  ({ id, from, to, body: `${from} to ${to} #${id}`, client_msg_id: null, created_at: "t", recalled_at: null });
const fast = { backoffBase: 0.001, backoffCap: 0.002, sendAttempts: 2 };

for (const logout of ["ok", "503", "unreachable"] as const) {
  test(`one store, two users in turn: the second sees only its own (logout ${logout})`, async () => {
    // bob has more entries than alice's cursor: the server's since_ahead would not help.
    const streams = {
      alice: [message(1, "carol", "alice"), message(2, "carol", "alice")],
      bob: [3, 4, 5, 6, 7, 8].map((id) => message(id, "carol", "bob")),
    };
    const { calls, fetchImpl } = accounts(streams, logout);
    const path = join(mkdtempSync(join(tmpdir(), "msgsync-")), "shared.json");
    const client = new Client(FileStore.open(path), "http://s", fast, {}, fetchImpl);
    await client.login("alice", "pw");
    assert.equal((await client.catchUp()).cursor, 2);
    await client.enqueue("carol", "alice's unsent note"); // never to be sent as bob
    assert.equal(await client.logout(), logout === "ok");
    for (const store of [client.store, FileStore.open(path)]) {
      assert.equal(store.session, null);
      assert.deepEqual([store.cursor, store.messages(), store.reads(), store.outbox()], [0, [], [], []]);
    }
    assert.equal(client.api.token, null);
    await assert.rejects(client.enqueue("carol", "after logout"), NotLoggedIn);

    await client.login("bob", "pw");
    assert.deepEqual(await client.resumeOutbox(), []);
    const from = calls.length;
    await client.catchUp();
    const first = calls.slice(from).find((c) => c.path.startsWith("/sync"));
    assert.equal(new URL(first?.path ?? "", "http://s").searchParams.get("since"), "0");
    assert.deepEqual(client.store.messages().map((m) => m.id), [3, 4, 5, 6, 7, 8]);
    assert.deepEqual(client.store.applied().map(([v]) => v), [1, 2, 3, 4, 5, 6]);
    assert.ok(!calls.some((c) => c.path === "/messages"), "nothing sent as bob");
    await client.close();
  });
}

test("a store with data and no session (a crash mid-logout, an older SDK) is cleared at login", async () => {
  const { fetchImpl } = accounts({ bob: [message(1, "carol", "bob")] });
  const store = new MemoryStore();
  await store.putOutbox({ client_msg_id: "x", to: "carol", body: "someone's", state: "pending", message_id: null, error: null });
  await store.applyPage({ entries: [], next_since: 40, latest_version: 40, has_more: false, history_fallback: false });
  const client = new Client(store, "http://s", fast, {}, fetchImpl);
  await client.login("bob", "pw");
  assert.deepEqual([store.cursor, store.outbox()], [0, []]);
});

test("the same user logging in again keeps its stream and its pending sends", async () => {
  const { fetchImpl } = accounts({ alice: [message(1, "bob", "alice"), message(2, "bob", "alice")] });
  const client = new Client(new MemoryStore(), "http://s", fast, {}, fetchImpl);
  const first = await client.login("alice", "pw");
  await client.catchUp();
  const pending = await client.enqueue("bob", "still mine");
  const second = await client.login("alice", "pw");
  assert.notEqual(second.device_id, first.device_id);
  assert.equal(client.store.cursor, 2);
  assert.deepEqual(client.store.outbox(), [pending]);
  await client.close(false);
});

test("a page or a send answered after logout is not written into the cleared store", async () => {
  const { fetchImpl, gates } = accounts({ alice: [message(1, "bob", "alice")] });
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  gates.set("/sync", gate);
  gates.set("/messages", gate);
  const client = new Client(new MemoryStore(), "http://s", fast, {}, fetchImpl);
  await client.login("alice", "pw");
  const syncing = client.catchUp();
  const sending = client.send("bob", "in flight");
  await new Promise((r) => setTimeout(r, 10)); // both requests are out
  assert.equal(await client.logout(), true);
  open();
  await assert.rejects(syncing, NotLoggedIn);
  await assert.rejects(sending, NotLoggedIn);
  assert.deepEqual([client.store.cursor, client.store.messages(), client.store.outbox()], [0, [], []]);
});

test("a logout during a page's write clears it after, and nobody hears of the page", async () => {
  const { fetchImpl } = accounts({ alice: [message(1, "bob", "alice")] });
  let writing!: () => void;
  const started = new Promise<void>((resolve) => (writing = resolve));
  let goOn!: () => void;
  const gate = new Promise<void>((resolve) => (goOn = resolve));
  class SlowStore extends MemoryStore {
    protected override async persist(change: Change): Promise<void> {
      if (change.messages?.length) {
        writing();
        await gate;
      }
    }
  }
  const heard: Message[] = [];
  const store = new SlowStore();
  const client = new Client(store, "http://s", fast, { onMessages: (m) => heard.push(...m) }, fetchImpl);
  await client.login("alice", "pw");
  const syncing = client.catchUp();
  await started;
  const loggingOut = client.logout();
  goOn();
  await assert.rejects(syncing, NotLoggedIn);
  assert.equal(await loggingOut, true);
  assert.deepEqual([store.cursor, store.messages(), heard], [0, [], []]);
});
