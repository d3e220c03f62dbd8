/** The conformance adapter: drives this SDK by JSON lines on stdin/stdout.
 * The protocol and the scenarios: clients/conformance/README.md.
 * Run as `node clients/js/dist/src/adapter.js`. */
import { createInterface } from "node:readline";
import { Client, type Options } from "./client.js";
import { MsgsyncError } from "./errors.js";
import { FileStore } from "./file-store.js";
import { type OutboxItem, groupOf } from "./types.js";

class BadRequest extends Error {}

type Json = Record<string, unknown>;

function outboxJson(i: OutboxItem): Json {
  const record: Json = { client_msg_id: i.client_msg_id, to: i.to, body: i.body, state: i.state, message_id: i.message_id };
  if (i.group_id) record["group_id"] = i.group_id;
  return record;
}

function sent(item: OutboxItem): Json {
  if (item.state === "failed") throw new MsgsyncError(`send failed: ${item.error}`, "send_failed");
  return { client_msg_id: item.client_msg_id, state: item.state, message_id: item.message_id };
}

const OPTION_NAMES: Record<string, keyof Options> = {
  ack_delay: "ackDelay",
  ack_every: "ackEvery",
  page_limit: "pageLimit",
  backoff_base: "backoffBase",
  backoff_cap: "backoffCap",
};

class Adapter {
  client: Client | null = null;
  /** [group_id, seq] of each group message the SDK told the app of, in order. */
  readonly heard: [string, number | null][] = [];

  private need(): Client {
    if (!this.client) throw new BadRequest("open first");
    return this.client;
  }

  async handle(req: Json): Promise<Json> {
    const cmd = req["cmd"];
    if (cmd === "open") return this.open(req);
    const client = this.need();
    switch (cmd) {
      case "login": {
        const s = await client.login(str(req, "user_id"), str(req, "password"), (req["device_name"] as string) ?? "");
        return { user_id: s.user_id, device_id: s.device_id };
      }
      case "logout":
        return { server_confirmed: await client.logout() };
      case "send":
        return sent(await client.send(str(req, "to"), str(req, "body")));
      case "create_group": {
        const group = await client.createGroup(str(req, "title"), strings(req, "members", true));
        return { group_id: group.group_id, title: group.title, owner: group.owner, member_count: group.member_count };
      }
      case "group_send":
        return sent(await client.sendGroup(str(req, "group_id"), str(req, "body")));
      case "add_members": {
        const group = await client.addMembers(str(req, "group_id"), strings(req, "user_ids"));
        return { member_count: group.member_count };
      }
      case "remove_member":
        await client.removeMember(str(req, "group_id"), str(req, "user_id"));
        return {};
      case "leave_group":
        await client.leaveGroup(str(req, "group_id"));
        return {};
      case "read_group": {
        const upTo = req["up_to_seq"];
        if (typeof upTo !== "number") throw new BadRequest("up_to_seq: a number is required");
        return { read_seq: await client.readGroup(str(req, "group_id"), upTo) };
      }
      case "resume_outbox":
        return { outbox: (await client.resumeOutbox()).map(outboxJson) };
      case "sync": {
        const max = req["max_pages"];
        const r = await client.catchUp(typeof max === "number" ? max : null);
        return {
          pages: r.pages,
          applied: r.applied,
          cursor: r.cursor,
          history_fallback: r.historyFallback,
          recovered: r.recovered,
        };
      }
      case "flush_acks":
        return { acked: await client.flushAcks() };
      case "state":
        return { ...state(client), heard: [...this.heard] };
      case "close":
        await client.close();
        this.client = null;
        return {};
      default:
        throw new BadRequest(`unknown cmd ${JSON.stringify(cmd)}`);
    }
  }

  open(req: Json): Json {
    if (this.client) throw new BadRequest("already open");
    const raw = (req["options"] ?? {}) as Record<string, unknown>;
    const options: Partial<Options> = {};
    for (const [name, key] of Object.entries(OPTION_NAMES)) {
      const value = raw[name];
      if (typeof value === "number") (options as Record<string, number>)[key] = value;
    }
    if (typeof raw["max_attempts"] === "number") {
      options.sendAttempts = options.syncAttempts = raw["max_attempts"];
    }
    const store = FileStore.open(str(req, "store"));
    const client = new Client(store, str(req, "server"), options);
    client.handlers.onMessages = (messages) => {
      for (const m of messages) {
        const groupId = groupOf(m);
        if (groupId !== null) this.heard.push([groupId, m.seq ?? null]);
      }
    };
    const dieAfter = raw["die_after_applying_pages"];
    if (typeof dieAfter === "number") {
      // Test hook outside the SDK: die inside the page's transaction, after its entries are
      // computed and before they are committed with the cursor: the point a store must not
      // split.
      let pages = 0;
      client.beforeCommit = () => {
        pages += 1;
        if (pages >= dieAfter) process.kill(process.pid, "SIGKILL");
      };
    }
    this.client = client;
    const s = store.session;
    return { logged_in: s !== null, user_id: s?.user_id ?? null, device_id: s?.device_id ?? null, cursor: store.cursor };
  }
}

function str(req: Json, name: string): string {
  const value = req[name];
  if (typeof value !== "string") throw new BadRequest(`${name}: a string is required`);
  return value;
}

function strings(req: Json, name: string, optional = false): string[] {
  const value = req[name];
  if (optional && (value === undefined || value === null)) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw new BadRequest(`${name}: a list of strings is required`);
  }
  return value as string[];
}

const byKey = <T>(record: Record<string, T>): Record<string, T> =>
  Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

function state(client: Client): Json {
  const store = client.store;
  const s = store.session; // null after a logout: what is left must be nothing
  return {
    user_id: s?.user_id ?? null,
    device_id: s?.device_id ?? null,
    cursor: store.cursor,
    acked: store.acked,
    messages: store
      .messages()
      .filter((m) => groupOf(m) === null)
      .map((m) => ({
        id: m.id,
        from: m.from,
        to: m.to,
        body: m.body,
        client_msg_id: m.client_msg_id,
        recalled_at: m.recalled_at,
      })),
    group_messages: store
      .messages()
      .filter((m) => groupOf(m) !== null)
      .map((m) => ({
        id: m.id,
        group_id: m.group_id,
        seq: m.seq,
        from: m.from,
        body: m.body,
        client_msg_id: m.client_msg_id,
        recalled_at: m.recalled_at,
      })),
    groups: store.groups().map((g) => ({
      group_id: g.group_id,
      title: g.title ?? "",
      owner: g.owner,
      role: g.role,
      seq: g.seq,
      read_seq: g.read_seq,
      pending: g.news > g.seq || g.stale,
      members: byKey(g.members),
    })),
    applied: store.applied(),
    reads: store.reads(),
    outbox: store.outbox().map(outboxJson),
    gaps: store.gaps,
  };
}

async function main(): Promise<void> {
  const adapter = new Adapter();
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  // One request at a time, in order; the SDK's timers (the delayed ack) run in between.
  for await (const line of lines) {
    if (!line.trim()) continue;
    let id: unknown = null;
    let reply: Json;
    try {
      const req: unknown = JSON.parse(line);
      if (req === null || typeof req !== "object" || Array.isArray(req)) {
        throw new BadRequest("a request is a JSON object");
      }
      id = (req as Json)["id"] ?? null;
      reply = { ok: true, result: await adapter.handle(req as Json) };
    } catch (exc) {
      if (exc instanceof MsgsyncError) {
        reply = { ok: false, error: { code: exc.code, message: exc.message } };
      } else if (exc instanceof BadRequest || exc instanceof SyntaxError) {
        reply = { ok: false, error: { code: "bad_request", message: exc.message } };
      } else {
        throw exc;
      }
    }
    reply["id"] = id;
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  }
  if (adapter.client) await adapter.client.close();
}

await main();
