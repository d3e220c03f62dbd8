import assert from "node:assert/strict";
import { test } from "node:test";
import { Client } from "../src/client.js";
import { Unauthorized } from "../src/errors.js";
import { MemoryStore } from "../src/store.js";

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
