/** The msgsync web client: plain DOM on the TypeScript SDK, its state in IndexedDB.
 * Every view is drawn from the local store, so what the page shows is what the store
 * holds: a message the sync applies twice would show twice (it cannot: keyed by id).
 *
 * A browser may be shared: logging out (here or in another tab), or a session ended by the
 * server, deletes the database and every localStorage key of the app, whatever the server
 * answered; a login starts from an empty database, so the next user's first sync starts at
 * their own beginning and nothing of the previous user is ever drawn. */
import {
  Api,
  ApiError,
  Client,
  IndexedDbStore,
  type Message,
  type OutboxItem,
  Transient,
  Unauthorized,
} from "../src/index.js";

const PAGE = 50; // messages shown per "page" of a conversation
const DB = "msgsync"; // the IndexedDB database: the whole local state of the signed-in user
const OPEN_KEY = "msgsync.open"; // localStorage: the conversation to reopen after a reload
const REMOVED = "removed"; // a failed send the user removed (kept out of the outbox's view)
// The server's rule for user ids (app/schemas.py), checked here to say it in words.
const USER_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;

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
  peerError: $("peer-error"),
  conversations: $("conversations"),
  back: $<HTMLButtonElement>("back"),
  peerTitle: $("peer-title"),
  peerNote: $("peer-note"),
  older: $<HTMLButtonElement>("older"),
  messages: $("messages"),
  composer: $<HTMLFormElement>("composer"),
  body: $<HTMLTextAreaElement>("body"),
};

let store: IndexedDbStore | null = null;
let client: Client | null = null;
let loop: AbortController | null = null;
let running: Promise<void> = Promise.resolve();
let online = navigator.onLine;
// The signed-in user's view state, all of it forgotten at logout (reset()).
let peer: string | null = null;
let shown = PAGE; // how many of the open conversation's newest messages are shown
const older = new Map<string, Map<number, Message>>(); // history fetched beyond the store
const olderDone = new Set<string>(); // peers whose whole history is here
const olderKnown = new Map<string, boolean>(); // does the server hold messages older than ours?
const markedRead = new Map<string, number>();
const confirming = new Set<number>(); // messages whose recall waits for "Yes, recall"
const recallErrors = new Map<number, string>();
/** After a history_fallback gap the read receipts of the pruned range are gone from the
 * stream: for a conversation with no receipt of ours here, the server's count (GET
 * /conversations) stands in. One receipt is enough to count locally: it says "read up to
 * this id", and every message is here (the fallback replays all of them). */
const serverUnread = new Map<string, { count: number; lastId: number }>();

function reset(): void {
  peer = null;
  shown = PAGE;
  for (const m of [older, olderKnown, markedRead, recallErrors, serverUnread]) m.clear();
  olderDone.clear();
  confirming.clear();
}

/** The server's history went back or was rewritten (a restore, a failover): the SDK forgot
 * the stream and syncs again from 0. What this page fetched or derived from the old history
 * goes too: history pages fetched beyond the store may hold messages the server no longer
 * has, and message ids may name other messages now. The open conversation stays open. */
function historyChanged(): void {
  for (const m of [older, olderKnown, markedRead, recallErrors, serverUnread]) m.clear();
  olderDone.clear();
  confirming.clear();
  draw();
  void refreshUnread();
}

// Tabs of one browser share the database: a logout in one ends the session in all.
const tabs = "BroadcastChannel" in window ? new BroadcastChannel("msgsync") : null;

type Status = "connecting" | "online" | "offline";
function setStatus(state: Status | null): void {
  // Shown only while a session syncs: no status at all on the login page.
  ui.status.hidden = state === null;
  if (state === null) return;
  ui.status.dataset["state"] = state;
  ui.status.textContent =
    state === "online" ? "Online" : state === "offline" ? "Offline: reconnecting…" : "Connecting…";
}

// -- words for what went wrong -----------------------------------------------------------

function noConnection(exc: unknown): boolean {
  return exc instanceof Transient && !exc.message.endsWith(": 429");
}

function loginProblem(exc: unknown): string {
  if (exc instanceof ApiError) {
    if (exc.code === "bad_credentials") return "Wrong user id or password.";
    if (exc.code === "user_exists") return "That user id is taken: choose another, or log in.";
    if (exc.code === "validation_error") return "This user id or password cannot be used.";
  }
  if (exc instanceof Transient) {
    return noConnection(exc)
      ? "The server cannot be reached. Check your connection and try again."
      : "Too many attempts: wait a minute and try again.";
  }
  return "Something went wrong. Try again.";
}

function sendProblem(o: OutboxItem): string {
  if (o.error === "body_too_large") return "This message is too long.";
  if (o.error === "recipient_not_found") return `There is no user named ${o.to}.`;
  if (o.error === "unavailable") return "The server could not be reached.";
  return "The server did not accept this message.";
}

function recallProblem(exc: unknown): string {
  if (exc instanceof ApiError && exc.code === "recall_window_passed") {
    return "Too late: this message can no longer be recalled.";
  }
  if (noConnection(exc)) return "Could not recall: no connection. Try again.";
  return "Could not recall this message.";
}

// -- dates ---------------------------------------------------------------------------------

const dayKey = (d: Date): string => d.toDateString();

/** "14:05" today, "Yesterday 14:05", "Nov 20, 14:05" this year, "Nov 20, 2025, 14:05". */
function when(iso: string, short = false): string {
  const d = new Date(iso);
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" });
  if (dayKey(d) === dayKey(now)) return time;
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (dayKey(d) === dayKey(yesterday)) return short ? "Yesterday" : `Yesterday ${time}`;
  const date = d.toLocaleDateString(undefined, {
    month: "short",
    day: "numeric",
    ...(d.getFullYear() === now.getFullYear() ? {} : { year: "numeric" }),
  });
  return short ? date : `${date}, ${time}`;
}

// -- drawing ---------------------------------------------------------------------------

let drawQueued = false;
function draw(): void {
  // Coalesce: a catch-up of many pages draws once per frame, not once per page.
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    if (!store || !client) return;
    markRead(); // first, so the open conversation's badge is already gone in this frame
    drawConversations();
    drawMessages();
  });
}

function me(): string {
  return store?.session?.user_id ?? "";
}

async function refreshUnread(): Promise<void> {
  const c = client;
  if (!c) return;
  try {
    const page = await c.conversations(200);
    if (c !== client) return;
    for (const x of page.conversations) {
      serverUnread.set(x.peer, { count: x.unread_count, lastId: x.last_message.id });
    }
    draw();
  } catch {
    // Offline: the local count stays; the next gap or start asks again.
  }
}

function unread(s: IndexedDbStore, p: string, messages: Message[]): number {
  // What this page just marked read counts before its receipt comes back in the stream.
  const upTo = Math.max(s.read(me(), p)?.up_to_message_id ?? 0, markedRead.get(p) ?? 0);
  const fromServer = serverUnread.get(p);
  if (fromServer && upTo === 0) {
    const newer = messages.filter((m) => m.from === p && m.id > fromServer.lastId && m.recalled_at === null);
    return fromServer.count + newer.length;
  }
  return messages.filter((m) => m.from === p && m.id > upTo && m.recalled_at === null).length;
}

function span(className: string, text: string): HTMLSpanElement {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

function drawConversations(): void {
  const s = store;
  if (!s) return;
  const byPeer = new Map<string, Message[]>();
  for (const m of s.messages()) {
    const p = m.from === me() ? m.to : m.from;
    let list = byPeer.get(p);
    if (!list) byPeer.set(p, (list = []));
    list.push(m);
  }
  if (peer && !byPeer.has(peer)) byPeer.set(peer, []);
  const peers = [...byPeer.entries()].sort(([, a], [, b]) => (b.at(-1)?.id ?? Infinity) - (a.at(-1)?.id ?? Infinity));
  let total = 0;
  const items = peers.map(([p, list]) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset["peer"] = p;
    if (p === peer) button.setAttribute("aria-current", "true");
    const last = list.at(-1);
    const top = document.createElement("span");
    top.className = "top";
    top.append(span("name", p));
    if (last) {
      const time = document.createElement("time");
      time.dateTime = last.created_at;
      time.textContent = when(last.created_at, true);
      top.append(time);
    }
    const bottom = document.createElement("span");
    bottom.className = "bottom";
    const text = !last ? "New conversation" : last.recalled_at ? "Message recalled" : last.body;
    bottom.append(span("preview", last && last.from === me() ? `You: ${text}` : text));
    const count = unread(s, p, list);
    total += count;
    if (count > 0) {
      const badge = span("unread", String(count));
      badge.setAttribute("aria-label", `${count} unread`);
      bottom.append(badge);
    }
    button.append(top, bottom);
    button.addEventListener("click", () => open(p));
    li.append(button);
    return li;
  });
  ui.conversations.replaceChildren(...items);
  document.title = total > 0 ? `(${total}) msgsync` : "msgsync";
}

function conversationMessages(p: string): Message[] {
  const all = new Map<number, Message>(older.get(p));
  for (const m of store?.messages(p) ?? []) all.set(m.id, m); // the stream's copy wins (recalls)
  return [...all.values()].sort((a, b) => a.id - b.id);
}

function drawMessages(): void {
  const s = store;
  if (!peer || !s) return;
  const all = conversationMessages(peer);
  const visible = all.slice(Math.max(0, all.length - shown));
  // "Load older messages" only when there are: hidden here, or on the server (asked once).
  ui.older.hidden = !(visible.length < all.length || (!olderDone.has(peer) && olderKnown.get(peer) === true));
  if (all.length > 0 && !olderDone.has(peer) && !olderKnown.has(peer)) void checkOlder(peer, all[0]!.id);
  const peerRead = s.read(peer, me())?.up_to_message_id ?? 0;
  const atBottom = ui.messages.scrollTop + ui.messages.clientHeight >= ui.messages.scrollHeight - 8;
  const items = visible.map((m) => messageItem(m, peerRead));
  const pending = s.outbox().filter((o) => o.to === peer && o.state !== "sent" && o.error !== REMOVED);
  for (const o of pending) items.push(pendingItem(o));
  ui.messages.replaceChildren(...items);
  const missing = pending.some((o) => o.error === "recipient_not_found");
  ui.peerNote.textContent = missing
    ? `There is no user named ${peer}.`
    : all.length === 0 && pending.length === 0
      ? "No messages yet."
      : "";
  if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

async function checkOlder(p: string, oldest: number): Promise<void> {
  const c = client;
  if (!c) return;
  olderKnown.set(p, false); // asked: not again while the answer is on its way
  try {
    const page = await c.history(p, 1, oldest);
    if (c !== client) return;
    if (page.messages.length > 0) olderKnown.set(p, true);
    else olderDone.add(p);
  } catch {
    olderKnown.delete(p); // offline: the next draw asks again
  }
  draw();
}

function button(text: string, onClick: () => void, label?: string): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
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
  const time = document.createElement("time");
  time.dateTime = m.created_at;
  time.title = new Date(m.created_at).toLocaleString();
  time.textContent = when(m.created_at);
  meta.append(time);
  if (mine) {
    meta.append(span("receipt", m.id <= peerRead ? "Read" : "Sent"));
    if (!m.recalled_at && confirming.has(m.id)) {
      const ask = document.createElement("div");
      ask.className = "confirm";
      ask.setAttribute("role", "group");
      ask.setAttribute("aria-label", "Confirm recall");
      ask.append(
        span("question", "Recall for both of you?"),
        button("Yes, recall", () => void recallMessage(m.id)),
        button("Keep", () => {
          confirming.delete(m.id);
          draw();
        }),
      );
      li.append(body, meta, ask);
      return li;
    }
    if (!m.recalled_at) {
      meta.append(
        button(
          "Recall",
          () => {
            recallErrors.delete(m.id);
            confirming.add(m.id);
            draw();
          },
          `Recall message ${m.body.slice(0, 40)}`,
        ),
      );
    }
  }
  li.append(body, meta);
  const error = recallErrors.get(m.id);
  if (error && !m.recalled_at) {
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = error;
    li.append(p);
  }
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
  if (o.state === "failed") {
    li.classList.add("failed");
    meta.append(
      span("error", `Not sent: ${sendProblem(o)}`),
      button("Retry", () => void retry(o)),
      button("Remove", () => void remove(o)),
    );
  } else {
    meta.textContent = "Sending…";
  }
  li.append(body, meta);
  return li;
}

// -- actions ---------------------------------------------------------------------------

function open(p: string, focus = true): void {
  peer = p;
  shown = PAGE;
  localStorage.setItem(OPEN_KEY, p);
  ui.chatView.classList.add("has-open");
  ui.peerTitle.textContent = `Conversation with ${p}`;
  ui.composer.hidden = false;
  ui.peerError.textContent = "";
  draw();
  requestAnimationFrame(() => {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    if (focus) ui.body.focus();
  });
}

function closeConversation(): void {
  // The phone's back control: the list again. (The desktop shows both panes.)
  peer = null;
  localStorage.removeItem(OPEN_KEY);
  ui.chatView.classList.remove("has-open");
  ui.peerTitle.textContent = "No conversation open";
  ui.peerNote.textContent = "";
  ui.composer.hidden = true;
  ui.older.hidden = true;
  ui.messages.replaceChildren();
  draw();
}

function markRead(): void {
  // Read receipts only for what the user can see: an open conversation in a visible tab.
  const c = client;
  if (!c || !store || !peer || document.visibilityState !== "visible") return;
  const last = store.messages(peer).filter((m) => m.from === peer).at(-1);
  if (!last) return;
  const current = Math.max(store.read(me(), peer)?.up_to_message_id ?? 0, markedRead.get(peer) ?? 0);
  if (last.id <= current) return;
  const p = peer;
  markedRead.set(p, last.id);
  c.markRead(p, last.id).catch((exc: unknown) => {
    markedRead.delete(p); // retried on the next draw
    if (exc instanceof Unauthorized) void sessionEnded(c);
  });
}

async function recallMessage(id: number): Promise<void> {
  const c = client;
  if (!c) return;
  confirming.delete(id);
  try {
    await c.recall(id); // the recall entry comes back through the sync stream
    recallErrors.delete(id);
  } catch (exc) {
    if (exc instanceof Unauthorized) return void sessionEnded(c);
    recallErrors.set(id, recallProblem(exc));
  }
  draw();
}

let loadingOlder = false;
async function loadOlder(): Promise<void> {
  // One page at a time: a second click while the server answers would skip a page.
  const c = client;
  if (!peer || !c || loadingOlder) return;
  loadingOlder = true;
  try {
    const p = peer;
    const all = conversationMessages(p);
    if (all.length < shown + PAGE && !olderDone.has(p)) {
      const page = await c.history(p, PAGE, all[0]?.id ?? null);
      let map = older.get(p);
      if (!map) older.set(p, (map = new Map()));
      for (const m of page.messages) map.set(m.id, m);
      if (page.next_before_id === null) olderDone.add(p);
      else olderKnown.set(p, true);
    }
    if (p === peer) shown += PAGE;
  } catch {
    // Offline: the button stays, for another try.
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

async function retry(o: OutboxItem): Promise<void> {
  const c = client;
  if (!c || !store) return;
  const again: OutboxItem = { ...o, state: "pending", error: null };
  await store.putOutbox(again);
  draw();
  try {
    await c.deliver(again);
  } catch (exc) {
    if (exc instanceof Unauthorized) void sessionEnded(c);
  }
  draw();
}

async function remove(o: OutboxItem): Promise<void> {
  // The SDK's outbox keeps every item; a removed one stays failed, marked, and undrawn.
  await store?.putOutbox({ ...o, state: "failed", error: REMOVED });
  draw();
}

// -- session, forgetting, and the sync loop ----------------------------------------------

function deleteDatabase(): Promise<void> {
  return new Promise((resolve) => {
    const req = indexedDB.deleteDatabase(DB);
    // Another tab's open connection blocks the deletion until it closes, which it does on
    // the "forget" message sent before this; the deletion then completes.
    req.onsuccess = () => resolve();
    req.onerror = () => resolve();
  });
}

/** Forget everything of the signed-in user on this browser: stop syncing, delete the
 * database and the app's localStorage keys (unless another tab does: `wipe` false), tell the
 * other tabs (`tell`), clear the page. */
async function forget(tell = true, wipe = true): Promise<void> {
  loop?.abort();
  client?.wake(); // ends a waiting long-poll, so the loop returns
  client = null;
  await running;
  store?.close();
  store = null;
  if (tell) tabs?.postMessage("forget");
  if (wipe) {
    for (const key of Object.keys(localStorage)) if (key.startsWith("msgsync")) localStorage.removeItem(key);
    await deleteDatabase();
  }
  reset();
  ui.conversations.replaceChildren();
  closeConversation();
  document.title = "msgsync";
}

function showLogin(message = ""): void {
  setStatus(null);
  ui.loginView.hidden = false;
  ui.chatView.hidden = true;
  ui.logout.hidden = true;
  ui.who.textContent = "";
  ui.loginError.textContent = message;
  ui.user.focus();
}

let ending: Promise<void> | null = null;
/** The server no longer knows this device (logged out elsewhere, deleted from another
 * device): forget it all and say so. */
function sessionEnded(c: Client): Promise<void> {
  if (c !== client) return Promise.resolve();
  ending ??= (async () => {
    await forget();
    showLogin("This device was logged out (from another device or by the server). Log in again.");
    ending = null;
  })();
  return ending;
}

function start(c: Client, s: IndexedDbStore): void {
  client = c;
  ui.loginView.hidden = true;
  ui.chatView.hidden = false;
  ui.logout.hidden = false;
  ui.who.textContent = `Signed in as ${s.session?.user_id ?? ""}`;
  setStatus(online ? "connecting" : "offline");
  const reopen = localStorage.getItem(OPEN_KEY);
  if (reopen) open(reopen, false);
  else closeConversation();
  const controller = new AbortController();
  loop = controller;
  void c.resumeOutbox().then(draw, () => undefined);
  if (s.gaps > 0) void refreshUnread();
  running = (async () => {
    while (!controller.signal.aborted) {
      try {
        await c.run(controller.signal);
      } catch (exc) {
        if (controller.signal.aborted) return;
        if (exc instanceof Unauthorized) {
          void sessionEnded(c);
          return;
        }
        console.warn("sync loop:", exc);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  })();
}

function makeClient(s: IndexedDbStore, server: string): Client {
  const c: Client = new Client(s, server, {}, {
    onMessages: draw,
    onRecalls: draw,
    onReads: draw,
    onReset: historyChanged,
    onGap: () => void refreshUnread(),
    onOutbox: draw,
    onStatus: (state) => {
      // The browser's own view wins while it says offline; fetch failures say the rest.
      if (c === client) setStatus(online ? state : "offline");
    },
  });
  return c;
}

function checkLogin(create: boolean, userId: string, password: string): string {
  if (!userId || !password) return "Enter your user id and password.";
  if (!create) return "";
  if (!USER_ID.test(userId)) {
    return "A user id is 1 to 64 lower-case letters, digits, dots, dashes or underscores, starting with a letter or digit.";
  }
  if (password.length < 8) return "A password needs at least 8 characters.";
  return "";
}

let loggingIn = false;
async function login(create: boolean): Promise<void> {
  if (loggingIn) return;
  const userId = ui.user.value.trim();
  const password = ui.password.value;
  ui.loginError.textContent = checkLogin(create, userId, password);
  if (ui.loginError.textContent) return;
  loggingIn = true;
  try {
    if (create) await new Api(location.origin).createUser(userId, password);
    // Whatever is still here is another user's, or has no session: never reused. (The
    // other tabs show the login page too: they share this state.)
    await forget(false);
    const s = await IndexedDbStore.open(DB);
    store = s;
    const c = makeClient(s, location.origin);
    try {
      await c.login(userId, password, `web: ${navigator.userAgent.slice(0, 60)}`);
    } catch (exc) {
      await forget(false);
      throw exc;
    }
    ui.password.value = "";
    tabs?.postMessage("login");
    start(c, s);
  } catch (exc) {
    ui.loginError.textContent = loginProblem(exc);
  } finally {
    loggingIn = false;
  }
}

async function logout(): Promise<void> {
  const c = client;
  if (!c) return;
  // The other tabs first: they share this device's token, so their waiting long-polls would
  // otherwise be answered 401 by the logout and report a session ended elsewhere.
  tabs?.postMessage("forget");
  // The loop next: its waiting long-poll would otherwise be answered 401 by the logout.
  loop?.abort();
  c.wake();
  await running;
  // The server is told if it can be reached; the local data goes whatever it answered.
  await Promise.race([c.logout().catch(() => undefined), new Promise((r) => setTimeout(r, 3000))]);
  await forget();
  showLogin();
}

function lookupProblem(exc: unknown): string {
  if (noConnection(exc)) return "The server cannot be reached. Check your connection and try again.";
  if (exc instanceof Transient) return "The server is busy: wait a moment and try again.";
  return "Could not look this user up. Try again.";
}

let chatAsked = 0; // the latest "Chat with": an earlier lookup answering late is ignored
/** Open a conversation with the id typed, once the server says there is such a user: an
 * unknown id is said at once, and nothing is sent to it. Somebody already in a conversation
 * here exists, and opens without asking (offline too). */
async function chatWith(): Promise<void> {
  const c = client;
  const p = ui.peerInput.value.trim();
  if (!p || !c) return;
  if (!USER_ID.test(p)) {
    ui.peerError.textContent = `“${p}” is not a user id: user ids are lower-case letters, digits, dots, dashes or underscores.`;
    return;
  }
  const asked = ++chatAsked;
  ui.peerError.textContent = "";
  let exists = (store?.messages(p).length ?? 0) > 0;
  try {
    if (!exists) exists = await c.api.userExists(p);
  } catch (exc) {
    if (c !== client || asked !== chatAsked) return;
    if (exc instanceof Unauthorized) return void sessionEnded(c);
    ui.peerError.textContent = lookupProblem(exc);
    return;
  }
  if (c !== client || asked !== chatAsked) return; // logged out, or another id asked since
  if (!exists) {
    ui.peerError.textContent = `There is no user named ${p}.`;
    return;
  }
  ui.peerInput.value = "";
  open(p);
}

async function main(): Promise<void> {
  ui.loginForm.addEventListener("submit", (e) => {
    e.preventDefault();
    void login(false);
  });
  ui.register.addEventListener("click", () => void login(true));
  ui.logout.addEventListener("click", () => void logout());
  ui.newChat.addEventListener("submit", (e) => {
    e.preventDefault();
    void chatWith();
  });
  ui.peerInput.addEventListener("input", () => (ui.peerError.textContent = ""));
  ui.back.addEventListener("click", closeConversation);
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
    if (client) setStatus("connecting");
    client?.wake();
  });
  window.addEventListener("offline", () => {
    online = false;
    if (client) setStatus("offline");
    client?.wake();
  });
  document.addEventListener("visibilitychange", draw);
  tabs?.addEventListener("message", (e: MessageEvent) => {
    if (e.data === "forget" && client) {
      // The tab that logged out deletes the database once this tab's connection is closed.
      void forget(false, false).then(() => showLogin("You logged out in another tab."));
    } else if (e.data === "login") {
      location.reload(); // the new session is in the database: start from it
    }
  });
  const s = await IndexedDbStore.open(DB);
  if (s.session) {
    store = s;
    start(makeClient(s, s.session.server), s);
  } else {
    // Data without a session (an interrupted logout) is never shown nor reused.
    s.close();
    await forget(false);
    showLogin();
  }
}

void main();
