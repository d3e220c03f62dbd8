/** The msgsync web client: plain DOM on the TypeScript SDK, its state in IndexedDB.
 * Every view is drawn from the local store, so what the page shows is what the store
 * holds: a message the sync applies twice would show twice (it cannot: keyed by id). */
import { Api, Client, IndexedDbStore, type Message, type OutboxItem, Unauthorized } from "../src/index.js";

const PAGE = 50; // messages shown per "page" of a conversation

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

const ui = {
  status: $("status"),
  who: $("who"),
  logout: $<HTMLButtonElement>("logout"),
  loginView: $("login-view"),
  loginForm: $<HTMLFormElement>("login-form"),
  user: $<HTMLInputElement>("user"),
  password: $<HTMLInputElement>("password"),
  register: $<HTMLButtonElement>("register"),
  loginError: $("login-error"),
  chatView: $("chat-view"),
  newChat: $<HTMLFormElement>("new-chat"),
  peerInput: $<HTMLInputElement>("peer-input"),
  conversations: $("conversations"),
  peerTitle: $("peer-title"),
  older: $<HTMLButtonElement>("older"),
  messages: $("messages"),
  composer: $<HTMLFormElement>("composer"),
  body: $<HTMLTextAreaElement>("body"),
};

let store: IndexedDbStore;
let client: Client | null = null;
let peer: string | null = null;
let shown = PAGE; // how many of the open conversation's newest messages are shown
const older = new Map<string, Map<number, Message>>(); // history fetched beyond the store
const olderDone = new Set<string>(); // peers whose whole history is here
const markedRead = new Map<string, number>();
let online = navigator.onLine;
let loop: AbortController | null = null;

function setStatus(state: "online" | "offline" | "syncing"): void {
  ui.status.dataset["state"] = state;
  ui.status.textContent = state === "online" ? "Online" : state === "offline" ? "Offline: reconnecting…" : "Syncing…";
}

// -- drawing ---------------------------------------------------------------------------

let drawQueued = false;
function draw(): void {
  // Coalesce: a catch-up of many pages draws once per frame, not once per page.
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    markRead(); // first, so the open conversation's badge is already gone in this frame
    drawConversations();
    drawMessages();
  });
}

function me(): string {
  return store.session?.user_id ?? "";
}

/** After a history_fallback gap the read receipts of the pruned range are gone from the
 * stream: for a conversation with no receipt of ours here, the server's count (GET
 * /conversations) stands in. One receipt is enough to count locally: it says "read up to
 * this id", and every message is here (the fallback replays all of them). */
const serverUnread = new Map<string, { count: number; lastId: number }>();

async function refreshUnread(): Promise<void> {
  if (!client) return;
  try {
    const page = await client.conversations(200);
    for (const c of page.conversations) {
      serverUnread.set(c.peer, { count: c.unread_count, lastId: c.last_message.id });
    }
    draw();
  } catch {
    // Offline: the local count stays; the next gap or start asks again.
  }
}

function unread(p: string, messages: Message[]): number {
  // What this page just marked read counts before its receipt comes back in the stream.
  const upTo = Math.max(store.read(me(), p)?.up_to_message_id ?? 0, markedRead.get(p) ?? 0);
  const fromServer = serverUnread.get(p);
  if (fromServer && upTo === 0) {
    const newer = messages.filter((m) => m.from === p && m.id > fromServer.lastId && m.recalled_at === null);
    return fromServer.count + newer.length;
  }
  return messages.filter((m) => m.from === p && m.id > upTo && m.recalled_at === null).length;
}

function drawConversations(): void {
  const byPeer = new Map<string, Message[]>();
  for (const m of store.messages()) {
    const p = m.from === me() ? m.to : m.from;
    let list = byPeer.get(p);
    if (!list) byPeer.set(p, (list = []));
    list.push(m);
  }
  if (peer && !byPeer.has(peer)) byPeer.set(peer, []);
  const peers = [...byPeer.entries()].sort(([, a], [, b]) => (b.at(-1)?.id ?? Infinity) - (a.at(-1)?.id ?? Infinity));
  const items = peers.map(([p, list]) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset["peer"] = p;
    if (p === peer) button.setAttribute("aria-current", "true");
    const name = document.createElement("span");
    name.textContent = p;
    button.append(name);
    const count = unread(p, list);
    if (count > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(count);
      badge.setAttribute("aria-label", `${count} unread`);
      button.append(badge);
    }
    button.addEventListener("click", () => open(p));
    li.append(button);
    return li;
  });
  ui.conversations.replaceChildren(...items);
}

function conversationMessages(p: string): Message[] {
  const all = new Map<number, Message>(older.get(p));
  for (const m of store.messages(p)) all.set(m.id, m); // the stream's copy wins (recalls)
  return [...all.values()].sort((a, b) => a.id - b.id);
}

function drawMessages(): void {
  if (!peer) return;
  const all = conversationMessages(peer);
  const visible = all.slice(Math.max(0, all.length - shown));
  ui.older.hidden = visible.length === all.length && olderDone.has(peer);
  const peerRead = store.read(peer, me())?.up_to_message_id ?? 0;
  const atBottom = ui.messages.scrollTop + ui.messages.clientHeight >= ui.messages.scrollHeight - 8;
  const items = visible.map((m) => messageItem(m, peerRead));
  for (const o of store.outbox()) {
    if (o.to === peer && o.state !== "sent") items.push(pendingItem(o));
  }
  ui.messages.replaceChildren(...items);
  if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

function messageItem(m: Message, peerRead: number): HTMLLIElement {
  const li = document.createElement("li");
  li.dataset["id"] = String(m.id);
  const mine = m.from === me();
  li.className = mine ? "mine" : "theirs";
  if (m.recalled_at) li.classList.add("recalled");
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = m.recalled_at ? "Message recalled" : m.body;
  const meta = document.createElement("div");
  meta.className = "meta";
  const when = document.createElement("time");
  when.dateTime = m.created_at;
  when.textContent = `${m.from} · ${new Date(m.created_at).toLocaleTimeString()}`;
  meta.append(when);
  if (mine) {
    const state = document.createElement("span");
    state.className = "receipt";
    state.textContent = m.id <= peerRead ? "Read" : "Sent";
    meta.append(state);
    if (!m.recalled_at) {
      const recall = document.createElement("button");
      recall.type = "button";
      recall.textContent = "Recall";
      recall.setAttribute("aria-label", `Recall message ${m.body.slice(0, 40)}`);
      recall.addEventListener("click", () => void recallMessage(m.id));
      meta.append(recall);
    }
  }
  li.append(body, meta);
  return li;
}

function pendingItem(o: OutboxItem): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "mine pending";
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = o.body;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = o.state === "failed" ? `Not sent (${o.error ?? "error"})` : "Sending…";
  li.append(body, meta);
  return li;
}

// -- actions ---------------------------------------------------------------------------

function open(p: string): void {
  peer = p;
  shown = PAGE;
  ui.peerTitle.textContent = `Conversation with ${p}`;
  ui.composer.hidden = false;
  draw();
  requestAnimationFrame(() => {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    ui.body.focus();
  });
}

function markRead(): void {
  // Read receipts only for what the user can see: an open conversation in a visible tab.
  if (!client || !peer || document.visibilityState !== "visible") return;
  const last = store.messages(peer).filter((m) => m.from === peer).at(-1);
  if (!last) return;
  const current = Math.max(store.read(me(), peer)?.up_to_message_id ?? 0, markedRead.get(peer) ?? 0);
  if (last.id <= current) return;
  const p = peer;
  markedRead.set(p, last.id);
  client.markRead(p, last.id).catch(() => markedRead.delete(p)); // retried on the next draw
}

async function recallMessage(id: number): Promise<void> {
  try {
    await client?.recall(id); // the recall entry comes back through the sync stream
  } catch (exc) {
    alert(`Could not recall: ${(exc as Error).message}`);
  }
}

let loadingOlder = false;
async function loadOlder(): Promise<void> {
  // One page at a time: a second click while the server answers would skip a page.
  if (!peer || !client || loadingOlder) return;
  loadingOlder = true;
  try {
    const p = peer;
    const all = conversationMessages(p);
    if (all.length < shown + PAGE && !olderDone.has(p)) {
      const page = await client.history(p, PAGE, all[0]?.id ?? null);
      let map = older.get(p);
      if (!map) older.set(p, (map = new Map()));
      for (const m of page.messages) map.set(m.id, m);
      if (page.next_before_id === null) olderDone.add(p);
    }
    if (p === peer) shown += PAGE;
  } finally {
    loadingOlder = false;
  }
  draw();
}

async function sendMessage(): Promise<void> {
  if (!client || !peer) return;
  const text = ui.body.value;
  if (!text.trim()) return;
  ui.body.value = "";
  // In the outbox (IndexedDB) before the first attempt, so a closed tab does not lose it;
  // delivered one at a time, in the order written.
  await client.post(peer, text);
  draw();
}

// -- session and the sync loop ---------------------------------------------------------

function showLogin(message = ""): void {
  loop?.abort();
  client = null;
  ui.loginView.hidden = false;
  ui.chatView.hidden = true;
  ui.logout.hidden = true;
  ui.who.textContent = "";
  ui.loginError.textContent = message;
  ui.user.focus();
}

async function start(c: Client): Promise<void> {
  client = c;
  ui.loginView.hidden = true;
  ui.chatView.hidden = false;
  ui.logout.hidden = false;
  ui.who.textContent = `Signed in as ${me()}`;
  setStatus(online ? "syncing" : "offline");
  draw();
  const controller = new AbortController();
  loop = controller;
  void c.resumeOutbox().then(draw, () => undefined);
  if (store.gaps > 0) void refreshUnread();
  while (!controller.signal.aborted) {
    try {
      await c.run(controller.signal);
    } catch (exc) {
      if (exc instanceof Unauthorized) {
        await c.close(false);
        showLogin("Your session has ended: log in again.");
        return;
      }
      console.error("sync loop:", exc);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

function makeClient(server: string): Client {
  return new Client(store, server, {}, {
    onMessages: draw,
    onRecalls: draw,
    onReads: draw,
    onReset: draw,
    onGap: () => void refreshUnread(),
    onOutbox: draw,
    onStatus: (s) => {
      // The browser's own view wins while it says offline; fetch failures say the rest.
      setStatus(online ? s : "offline");
    },
  });
}

async function login(create: boolean): Promise<void> {
  ui.loginError.textContent = "";
  const userId = ui.user.value.trim();
  const password = ui.password.value;
  try {
    if (create) await new Api(location.origin).createUser(userId, password);
    const c = makeClient(location.origin);
    await c.login(userId, password, `web: ${navigator.userAgent.slice(0, 60)}`);
    ui.password.value = "";
    void start(c);
  } catch (exc) {
    ui.loginError.textContent = (exc as Error).message;
  }
}

async function main(): Promise<void> {
  store = await IndexedDbStore.open("msgsync");
  ui.loginForm.addEventListener("submit", (e) => {
    e.preventDefault();
    void login(false);
  });
  ui.register.addEventListener("click", () => {
    if (ui.loginForm.reportValidity()) void login(true);
  });
  ui.logout.addEventListener("click", () => {
    const c = client;
    loop?.abort(); // the loop returns once logout's wake() ends its long-poll
    void c?.logout().finally(() => showLogin());
  });
  ui.newChat.addEventListener("submit", (e) => {
    e.preventDefault();
    const p = ui.peerInput.value.trim();
    if (p) open(p);
    ui.peerInput.value = "";
  });
  ui.older.addEventListener("click", () => void loadOlder());
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    void sendMessage();
  });
  ui.body.addEventListener("keydown", (e) => {
    // Enter sends, Shift+Enter is a new line.
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      void sendMessage();
    }
  });
  // Coming back online ends the backoff's wait at once; going offline ends the waiting
  // long-poll, whose connection the browser may not report dead for a long while.
  window.addEventListener("online", () => {
    online = true;
    setStatus("syncing");
    client?.wake();
  });
  window.addEventListener("offline", () => {
    online = false;
    setStatus("offline");
    client?.wake();
  });
  document.addEventListener("visibilitychange", draw);
  if (store.session) void start(makeClient(store.session.server));
  else showLogin();
}

void main();
