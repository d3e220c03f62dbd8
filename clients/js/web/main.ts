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
  type GroupState,
  IndexedDbStore,
  type Message,
  type OutboxItem,
  Transient,
  Unauthorized,
  groupOf,
} from "../src/index.js";

const PAGE = 50; // messages shown per "page" of a conversation
const DB = "msgsync"; // the IndexedDB database: the whole local state of the signed-in user
const OPEN_KEY = "msgsync.open"; // localStorage: the conversation to reopen after a reload
const GROUP_PREFIX = "group:"; // in OPEN_KEY: a group (a user id holds no colon)
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
  newGroupToggle: $<HTMLButtonElement>("new-group-toggle"),
  newGroup: $<HTMLFormElement>("new-group"),
  groupTitle: $<HTMLInputElement>("group-title"),
  groupMembers: $<HTMLInputElement>("group-members"),
  groupError: $("group-error"),
  conversations: $("conversations"),
  back: $<HTMLButtonElement>("back"),
  peerTitle: $("peer-title"),
  peerNote: $("peer-note"),
  membersToggle: $<HTMLButtonElement>("members-toggle"),
  membersPanel: $("members-panel"),
  members: $("members"),
  addMember: $<HTMLFormElement>("add-member"),
  memberInput: $<HTMLInputElement>("member-input"),
  memberError: $("member-error"),
  leave: $<HTMLButtonElement>("leave"),
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
let group: string | null = null; // the open group (peer and group: one of them at most)
const markedGroupRead = new Map<string, number>();
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
  group = null;
  for (const m of [older, olderKnown, markedRead, markedGroupRead, recallErrors, serverUnread]) m.clear();
  olderDone.clear();
  confirming.clear();
}

/** The server's history went back or was rewritten (a restore, a failover): the SDK forgot
 * the stream and syncs again from 0. What this page fetched or derived from the old history
 * goes too: history pages fetched beyond the store may hold messages the server no longer
 * has, and message ids may name other messages now. The open conversation stays open. */
function historyChanged(): void {
  for (const m of [older, olderKnown, markedRead, markedGroupRead, recallErrors, serverUnread]) m.clear();
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
  if (o.error === "group_not_found") return "You are no longer in this group.";
  if (o.error === "recipient_not_found") return `There is no user named ${o.to}.`;
  if (o.error === "unavailable") return "The server could not be reached.";
  return "The server did not accept this message.";
}

function groupProblem(exc: unknown): string {
  if (exc instanceof ApiError) {
    if (exc.code === "user_not_found") {
      const who = exc.body["user_id"];
      return typeof who === "string" ? `There is no user named ${who}.` : "One of these users does not exist.";
    }
    if (exc.code === "not_group_admin") return "Only the group's admins can do this.";
    if (exc.code === "group_too_large") return "The group would have too many members.";
    if (exc.code === "group_not_found") return "You are no longer in this group.";
    if (exc.code === "validation_error") return "This cannot be used as a group title or member list.";
  }
  if (noConnection(exc)) return "The server cannot be reached. Check your connection and try again.";
  return "Something went wrong. Try again.";
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
      // A group's count is exact here: its log fills what the stream lost.
      if (x.peer) serverUnread.set(x.peer, { count: x.unread_count, lastId: x.last_message.id });
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

function groupUnread(g: GroupState, messages: Message[]): number {
  const upTo = Math.max(g.read_seq, markedGroupRead.get(g.group_id) ?? 0);
  return messages.filter((m) => m.from !== me() && (m.seq ?? 0) > upTo && m.recalled_at === null).length;
}

const groupName = (g: GroupState | undefined): string => g?.title ?? "Group";

/** One row of the conversation list: a direct chat or a group. */
interface Row {
  key: string;
  name: string;
  last: Message | undefined;
  unread: number;
  current: boolean;
  open: () => void;
  data: [string, string];
  preview: (last: Message) => string;
}

function conversationButton(row: Row): HTMLLIElement {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset[row.data[0]] = row.data[1];
  if (row.current) button.setAttribute("aria-current", "true");
  const last = row.last;
  const top = document.createElement("span");
  top.className = "top";
  top.append(span("name", row.name));
  if (last) {
    const time = document.createElement("time");
    time.dateTime = last.created_at;
    time.textContent = when(last.created_at, true);
    top.append(time);
  }
  const bottom = document.createElement("span");
  bottom.className = "bottom";
  const text = !last ? "New conversation" : last.recalled_at ? "Message recalled" : last.body;
  bottom.append(span("preview", last && !last.recalled_at ? row.preview(last) : text));
  if (row.unread > 0) {
    const badge = span("unread", String(row.unread));
    badge.setAttribute("aria-label", `${row.unread} unread`);
    bottom.append(badge);
  }
  button.append(top, bottom);
  button.addEventListener("click", row.open);
  li.append(button);
  return li;
}

function drawConversations(): void {
  const s = store;
  if (!s) return;
  const byPeer = new Map<string, Message[]>();
  for (const m of s.messages()) {
    if (groupOf(m) !== null || m.to === null) continue;
    const p = m.from === me() ? m.to : m.from;
    let list = byPeer.get(p);
    if (!list) byPeer.set(p, (list = []));
    list.push(m);
  }
  if (peer && !byPeer.has(peer)) byPeer.set(peer, []);
  const rows: Row[] = [...byPeer.entries()].map(([p, list]) => ({
    key: p,
    name: p,
    last: list.at(-1),
    unread: unread(s, p, list),
    current: p === peer,
    open: () => open(p),
    data: ["peer", p],
    preview: (last) => (last.from === me() ? `You: ${last.body}` : last.body),
  }));
  for (const g of s.groups()) {
    const list = s.groupMessages(g.group_id);
    rows.push({
      key: GROUP_PREFIX + g.group_id,
      name: groupName(g),
      last: list.at(-1),
      unread: groupUnread(g, list),
      current: g.group_id === group,
      open: () => openGroup(g.group_id),
      data: ["group", g.group_id],
      preview: (last) => `${last.from === me() ? "You" : last.from}: ${last.body}`,
    });
  }
  // Newest activity first (message ids grow with time across the service); a conversation
  // without messages yet, just opened or created, on top.
  rows.sort((a, b) => (b.last?.id ?? Infinity) - (a.last?.id ?? Infinity));
  let total = 0;
  for (const row of rows) total += row.unread;
  ui.conversations.replaceChildren(...rows.map(conversationButton));
  document.title = total > 0 ? `(${total}) msgsync` : "msgsync";
}

function conversationMessages(p: string): Message[] {
  const all = new Map<number, Message>(older.get(p));
  for (const m of store?.messages(p) ?? []) all.set(m.id, m); // the stream's copy wins (recalls)
  return [...all.values()].sort((a, b) => a.id - b.id);
}

function drawMessages(): void {
  if (group !== null) return drawGroup(group);
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
  const pending = s.outbox().filter((o) => !o.group_id && o.to === peer && o.state !== "sent" && o.error !== REMOVED);
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

function drawGroup(id: string): void {
  const s = store;
  if (!s) return;
  const g = s.group(id);
  if (!g) {
    // Left, or removed by an admin: nothing of it stays.
    closeConversation();
    return;
  }
  ui.peerTitle.textContent = groupName(g);
  // The whole history since joining is here (the stream, or the group's log): no paging.
  ui.older.hidden = true;
  const atBottom = ui.messages.scrollTop + ui.messages.clientHeight >= ui.messages.scrollHeight - 8;
  const all = s.groupMessages(id);
  const items = all.slice(Math.max(0, all.length - shown)).map((m) => messageItem(m, 0, true));
  const pending = s.outbox().filter((o) => o.group_id === id && o.state !== "sent" && o.error !== REMOVED);
  for (const o of pending) items.push(pendingItem(o));
  ui.messages.replaceChildren(...items);
  const count = g.member_count === null ? "" : g.member_count === 1 ? "1 member" : `${g.member_count} members`;
  ui.peerNote.textContent = all.length === 0 && pending.length === 0 ? [count, "No messages yet."].filter(Boolean).join(" · ") : count;
  drawMembers(g);
  if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

/** The open group's members, from the store: kept by the group's events as they come. */
function drawMembers(g: GroupState): void {
  ui.membersToggle.setAttribute("aria-expanded", String(!ui.membersPanel.hidden));
  if (ui.membersPanel.hidden) return;
  const roles = Object.entries(g.members).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  ui.addMember.hidden = g.role === null || g.role === "member";
  ui.members.replaceChildren(
    ...roles.map(([user, role]) => {
      const li = document.createElement("li");
      li.dataset["user"] = user;
      li.append(span("name", user === me() ? `${user} (you)` : user));
      if (role !== "member") li.append(span("role", role));
      return li;
    }),
  );
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

function messageItem(m: Message, peerRead: number, inGroup = false): HTMLLIElement {
  const li = document.createElement("li");
  li.dataset["id"] = String(m.id);
  const mine = m.from === me();
  li.className = mine ? "mine" : "theirs";
  if (m.recalled_at) li.classList.add("recalled");
  if (inGroup && !mine) li.append(span("sender", m.from));
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
    // In a group, "Read" would need every member's cursor: the list shows one per member.
    if (!inGroup) meta.append(span("receipt", m.id <= peerRead ? "Read" : "Sent"));
    if (!m.recalled_at && confirming.has(m.id)) {
      const ask = document.createElement("div");
      ask.className = "confirm";
      ask.setAttribute("role", "group");
      ask.setAttribute("aria-label", "Confirm recall");
      ask.append(
        span("question", inGroup ? "Recall for everyone?" : "Recall for both of you?"),
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
  group = null;
  shown = PAGE;
  localStorage.setItem(OPEN_KEY, p);
  showConversation(`Conversation with ${p}`, focus);
}

function openGroup(id: string, focus = true): void {
  peer = null;
  if (group !== id) ui.memberError.textContent = "";
  group = id;
  shown = PAGE;
  localStorage.setItem(OPEN_KEY, GROUP_PREFIX + id);
  showConversation(groupName(store?.group(id)), focus);
  ui.membersToggle.hidden = false;
  ui.leave.hidden = false;
}

function showConversation(title: string, focus: boolean): void {
  ui.chatView.classList.add("has-open");
  ui.peerTitle.textContent = title;
  ui.composer.hidden = false;
  ui.peerError.textContent = "";
  ui.membersToggle.hidden = true;
  ui.membersPanel.hidden = true;
  ui.leave.hidden = true;
  draw();
  requestAnimationFrame(() => {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    if (focus) ui.body.focus();
  });
}

function closeConversation(): void {
  // The phone's back control: the list again. (The desktop shows both panes.)
  peer = null;
  group = null;
  localStorage.removeItem(OPEN_KEY);
  ui.chatView.classList.remove("has-open");
  ui.membersToggle.hidden = true;
  ui.membersPanel.hidden = true;
  ui.leave.hidden = true;
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
  if (!c || !store || document.visibilityState !== "visible") return;
  if (group !== null) return markGroupRead(c, store, group);
  if (!peer) return;
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

function markGroupRead(c: Client, s: IndexedDbStore, id: string): void {
  const g = s.group(id);
  const last = s.groupMessages(id).at(-1);
  if (!g || typeof last?.seq !== "number") return;
  const current = Math.max(g.read_seq, markedGroupRead.get(id) ?? 0);
  if (last.seq <= current) return;
  markedGroupRead.set(id, last.seq);
  c.readGroup(id, last.seq).catch((exc: unknown) => {
    markedGroupRead.delete(id); // retried on the next draw
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
  if (!client || (!peer && group === null)) return;
  const text = ui.body.value;
  if (!text.trim()) return;
  ui.body.value = "";
  // In the outbox (IndexedDB) before the first attempt, so a closed tab does not lose it;
  // delivered one at a time, in the order written.
  if (group !== null) await client.postGroup(group, text);
  else if (peer) await client.post(peer, text);
  draw();
}

/** User ids typed in one field, separated by commas or spaces. */
function userIds(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).filter(Boolean))];
}

let creating = false;
async function createGroup(): Promise<void> {
  const c = client;
  if (!c || creating) return;
  const title = ui.groupTitle.value.trim();
  const ids = userIds(ui.groupMembers.value).filter((id) => id !== me());
  const bad = ids.find((id) => !USER_ID.test(id));
  ui.groupError.textContent = !title
    ? "Give the group a title."
    : title.length > 200
      ? "A title has at most 200 characters."
      : bad !== undefined
        ? `“${bad}” is not a user id.`
        : "";
  if (ui.groupError.textContent) return;
  creating = true;
  try {
    const created = await c.createGroup(title, ids);
    if (c !== client) return;
    ui.groupTitle.value = "";
    ui.groupMembers.value = "";
    ui.newGroup.hidden = true;
    ui.newGroupToggle.setAttribute("aria-expanded", "false");
    openGroup(created.group_id);
  } catch (exc) {
    if (exc instanceof Unauthorized) return void sessionEnded(c);
    ui.groupError.textContent = groupProblem(exc);
  } finally {
    creating = false;
  }
}

async function addMember(): Promise<void> {
  const c = client;
  const id = group;
  if (!c || id === null) return;
  const ids = userIds(ui.memberInput.value);
  const bad = ids.find((u) => !USER_ID.test(u));
  ui.memberError.textContent = ids.length === 0 ? "Enter a user id." : bad !== undefined ? `“${bad}” is not a user id.` : "";
  if (ui.memberError.textContent) return;
  try {
    await c.addMembers(id, ids); // the events come back through the stream, to every device
    ui.memberInput.value = "";
    if (id === group) ui.memberError.textContent = "";
  } catch (exc) {
    if (exc instanceof Unauthorized) return void sessionEnded(c);
    if (id === group) ui.memberError.textContent = groupProblem(exc);
  }
}

async function leaveGroup(): Promise<void> {
  const c = client;
  const id = group;
  if (!c || id === null) return;
  try {
    await c.leaveGroup(id); // forgotten here too: the view closes
    closeConversation();
  } catch (exc) {
    if (exc instanceof Unauthorized) return void sessionEnded(c);
    ui.memberError.textContent = groupProblem(exc);
    ui.membersPanel.hidden = false;
    draw();
  }
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
  if (reopen?.startsWith(GROUP_PREFIX)) openGroup(reopen.slice(GROUP_PREFIX.length), false);
  else if (reopen) open(reopen, false);
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
    onGroups: draw,
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
  ui.newGroupToggle.addEventListener("click", () => {
    ui.newGroup.hidden = !ui.newGroup.hidden;
    ui.newGroupToggle.setAttribute("aria-expanded", String(!ui.newGroup.hidden));
    if (!ui.newGroup.hidden) ui.groupTitle.focus();
  });
  ui.newGroup.addEventListener("submit", (e) => {
    e.preventDefault();
    void createGroup();
  });
  ui.membersToggle.addEventListener("click", () => {
    ui.membersPanel.hidden = !ui.membersPanel.hidden;
    draw();
  });
  ui.addMember.addEventListener("submit", (e) => {
    e.preventDefault();
    void addMember();
  });
  ui.leave.addEventListener("click", () => void leaveGroup());
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
