/** The client: session, outbox, and the sync loop (apply, persist, then ack).
 * The algorithm is the one every msgsync SDK implements (docs/client-algorithm.md). */
import { Acker } from "./acker.js";
import { Api } from "./api.js";
import { Backoff, sleep } from "./backoff.js";
import {
  ApiError,
  MsgsyncError,
  NotLoggedIn,
  HistoryChanged,
  Transient,
  Unauthorized,
  Unavailable,
} from "./errors.js";
import type { BeforeCommit, Store } from "./store.js";
import type { Message, OutboxItem, ReadReceipt, Recall, Session, SyncPage } from "./types.js";

export interface Options {
  pageLimit: number; // the server's maximum by default: a catch-up takes the fewest trips
  longPollTimeout: number; // seconds, below common proxies' 60 s idle timeouts
  ackDelay: number;
  ackEvery: number;
  backoffBase: number;
  backoffCap: number;
  sendAttempts: number;
  syncAttempts: number | null; // null: a sync retries until the server is back
}

export const defaultOptions: Options = {
  pageLimit: 1000,
  longPollTimeout: 30,
  ackDelay: 1,
  ackEvery: 100,
  backoffBase: 0.5,
  backoffCap: 30,
  sendAttempts: 8,
  syncAttempts: null,
};

/** Callbacks, called after the change is committed to the local store. */
export interface Handlers {
  onMessages?: (messages: Message[]) => void;
  onRecalls?: (recalls: Recall[]) => void;
  onReads?: (reads: ReadReceipt[]) => void;
  onGap?: (page: SyncPage) => void; // history_fallback: operations were pruned
  /** The server's history went back or was rewritten (409 since_ahead, history_rewritten):
   * the stream was forgotten and syncs again from 0; called with the server's latest. */
  onReset?: (latestVersion: number) => void;
  onOutbox?: (item: OutboxItem) => void;
  /** The connection's state: "online" after an answer, "offline" after a failed attempt. */
  onStatus?: (status: "online" | "offline") => void;
}

export interface SyncResult {
  pages: number;
  applied: number;
  cursor: number;
  historyFallback: boolean;
  recovered: boolean;
  latestVersion: number;
}

const newId = (): string => globalThis.crypto.randomUUID().replaceAll("-", "");

export class Client {
  readonly api: Api;
  readonly options: Options;
  handlers: Handlers;
  /** Test hook (the conformance adapter's crash point): runs inside applyPage. */
  beforeCommit: BeforeCommit | undefined;
  private ackerInstance: Acker | null = null;
  private wakeup = new AbortController();
  /** Bumped by login and logout: a page fetched before either is not applied after it (it
   * belongs to a session that is over, maybe another user's). */
  private generation = 0;

  constructor(
    readonly store: Store,
    server: string | null = null,
    options: Partial<Options> = {},
    handlers: Handlers = {},
    fetchImpl?: typeof fetch,
  ) {
    this.options = { ...defaultOptions, ...options };
    this.handlers = handlers;
    const session = store.session;
    const base = server ?? session?.server;
    if (!base) throw new Error("no server URL given and no session in the store");
    this.api = new Api(base, session?.access_token ?? null, fetchImpl);
  }

  // -- session -------------------------------------------------------------------------

  get session(): Session {
    const session = this.store.session;
    if (!session) throw new NotLoggedIn();
    return session;
  }

  /** Log in on this store. The store keeps its data only for the same account (server and
   * user) logging in again, e.g. after its session ended with a 401: it continues from its
   * cursor. Anything else in the store (another user's stream and outbox, or data without a
   * session, left by a crash or an older SDK) is forgotten in the same transaction that
   * stores the new session: it would show this user another's messages, send another's
   * queued messages as this user, and make its first sync ask from another's cursor,
   * skipping its own entries. */
  async login(userId: string, password: string, deviceName = ""): Promise<Session> {
    const data = await this.api.login(userId, password, deviceName);
    this.generation += 1; // a page fetched for the previous session is not applied
    if (this.ackerInstance) {
      // The old device's acker may hold its 401: the new session starts clean.
      await this.ackerInstance.close(false);
      this.ackerInstance = null;
    }
    const session: Session = {
      server: this.api.baseUrl,
      user_id: data.user_id,
      device_id: data.device_id,
      access_token: data.access_token,
    };
    const current = this.store.session;
    const sameAccount = current !== null && current.server === session.server && current.user_id === session.user_id;
    await this.store.commit(sameAccount ? { meta: { session } } : { clear: true, meta: { session } });
    this.api.token = session.access_token;
    return session;
  }

  /** Forget the user on this device, then end the session on the server.
   *
   * The store is cleared first (session and token, stream, cursor, read receipts, outbox:
   * pending sends are dropped, never delivered as the next user), so a closed tab or an
   * unreachable server cannot leave the user's data behind on a shared computer. Then one
   * `POST /logout` with the old token. Resolves true when the server confirmed (204, or
   * 401: the session was already over there), false when it could not be told (no answer,
   * 5xx, another error): the data here is gone all the same, but the device stays in the
   * user's device list, and its token valid, until it is removed from another device
   * (`DELETE /devices/{id}`). Without a session it only clears the store (and resolves
   * true: there is nothing to end on the server). Never rejects for the server's answer. */
  async logout(): Promise<boolean> {
    const session = this.store.session;
    this.generation += 1; // a page in flight for this session is dropped, not applied
    await this.close(false); // nothing more is acked for a device that is going away
    await this.store.clear();
    this.api.token = null;
    if (!session) return true;
    try {
      await this.api.logout(session.access_token);
    } catch (exc) {
      if (exc instanceof Unauthorized) return true; // already over on the server
      if (exc instanceof Transient || exc instanceof MsgsyncError) return false;
      throw exc;
    }
    return true;
  }

  private backoff(): Backoff {
    return new Backoff(this.options.backoffBase, this.options.backoffCap);
  }

  /** Cut a backoff sleep or a waiting long-poll short: the app calls it when the browser
   * comes back online, so the catch-up starts at once instead of after the backoff. */
  wake(): void {
    const old = this.wakeup;
    this.wakeup = new AbortController();
    old.abort();
  }

  // -- outbox --------------------------------------------------------------------------

  /** Store the send with its client_msg_id before any attempt: a retry after a crash or a
   * lost answer reuses the id, and the server answers with the first result. */
  async enqueue(to: string, body: string): Promise<OutboxItem> {
    void this.session;
    const item: OutboxItem = {
      client_msg_id: newId(),
      to,
      body,
      state: "pending",
      message_id: null,
      error: null,
    };
    await this.store.putOutbox(item);
    this.handlers.onOutbox?.(item);
    return item;
  }

  async deliver(item: OutboxItem): Promise<OutboxItem> {
    const generation = this.generation;
    // The outcome is stored only while the session that queued the send lasts: after a
    // logout, writing it would put the user's send back into a cleared store.
    const store = async (outcome: OutboxItem): Promise<OutboxItem> => {
      if (generation !== this.generation) throw new NotLoggedIn();
      await this.store.putOutbox(outcome);
      this.handlers.onOutbox?.(outcome);
      return outcome;
    };
    const backoff = this.backoff();
    let error = "unavailable";
    for (let attempt = 0; attempt < this.options.sendAttempts; attempt++) {
      if (generation !== this.generation) throw new NotLoggedIn();
      try {
        const out = await this.api.send(item.to, item.body, item.client_msg_id);
        return await store({ ...item, state: "sent", message_id: out.message.id, error: null });
      } catch (exc) {
        if (exc instanceof Transient) {
          if (attempt + 1 < this.options.sendAttempts) {
            await sleep(backoff.nextDelay(exc.retryAfter), this.wakeup.signal);
          }
          continue;
        }
        if (exc instanceof Unauthorized) throw exc; // stays pending: a new login delivers it
        if (exc instanceof ApiError) {
          error = exc.code;
          break;
        }
        throw exc;
      }
    }
    return store({ ...item, state: "failed", error });
  }

  async send(to: string, body: string): Promise<OutboxItem> {
    return this.deliver(await this.enqueue(to, body));
  }

  private queue: Promise<unknown> = Promise.resolve();

  /** Store the send now and deliver it after every send queued before it: the recipient
   * sees messages in the order they were written (the server numbers them as they come,
   * so sends in parallel could land in any order). Resolves with the stored item; the
   * outcome arrives through onOutbox. */
  async post(to: string, body: string): Promise<OutboxItem> {
    const item = await this.enqueue(to, body);
    this.queue = this.queue.then(() => this.deliver(item)).catch(() => undefined);
    return item;
  }

  /** Deliver the sends an earlier process left pending, oldest first. */
  async resumeOutbox(): Promise<OutboxItem[]> {
    for (const item of this.store.outbox()) {
      if (item.state === "pending") await this.deliver(item);
    }
    return this.store.outbox();
  }

  // -- sync ----------------------------------------------------------------------------

  get acker(): Acker {
    this.ackerInstance ??= new Acker(
      (v) => this.api.ack(v),
      (v) => this.store.setAcked(v),
      this.store.acked,
      { ackDelay: this.options.ackDelay, ackEvery: this.options.ackEvery, backoff: this.backoff() },
    );
    return this.ackerInstance;
  }

  private async fetchPage(
    since: number,
    sinceId: string | null,
    timeout: number,
    stop?: AbortSignal,
  ): Promise<SyncPage> {
    const backoff = this.backoff();
    let attempts = 0;
    for (;;) {
      if (this.acker.error) throw this.acker.error;
      if (stop?.aborted) throw new Stopped();
      const wakeup = this.wakeup;
      try {
        const page = await this.api.sync(since, this.options.pageLimit, timeout, wakeup.signal, sinceId);
        this.handlers.onStatus?.("online");
        return page;
      } catch (exc) {
        if (!(exc instanceof Transient)) throw exc;
        if (wakeup.signal.aborted) {
          backoff.reset(); // woken (back online): try again at once
          continue;
        }
        this.handlers.onStatus?.("offline");
        attempts += 1;
        if (this.options.syncAttempts !== null && attempts >= this.options.syncAttempts) {
          throw new Unavailable(`sync failed ${attempts} times: ${exc.message}`);
        }
        await sleep(backoff.nextDelay(exc.retryAfter), this.wakeup.signal);
      }
    }
  }

  /** One step of the loop: fetch from the stored cursor, apply and persist, then tell the
   * acker. since_ahead and history_rewritten run the recovery and fetch again from 0. */
  async syncPage(timeout = 0, result?: SyncResult, stop?: AbortSignal): Promise<SyncPage> {
    const r = result ?? emptyResult();
    void this.session;
    const generation = this.generation;
    const ended = () => (stop?.aborted ? new Stopped() : new NotLoggedIn());
    let page: SyncPage;
    try {
      // The id of the entry at the cursor goes with it: the server answers 409
      // history_rewritten when that entry is another one now.
      page = await this.fetchPage(this.store.cursor, this.store.cursorId, timeout, stop);
    } catch (exc) {
      if (!(exc instanceof HistoryChanged)) throw exc;
      if (generation !== this.generation) throw ended();
      await this.recover(exc);
      r.recovered = true;
      page = await this.fetchPage(0, null, timeout, stop);
    }
    // Fetched for a session that logout (or a new login) has ended: applying it would put
    // that user's entries back into a cleared store. Checked in the same turn as the store
    // opens its transaction, so a clear that follows is committed after it.
    if (generation !== this.generation) throw ended();
    const applied = await this.store.applyPage(page, this.beforeCommit); // one transaction
    // Logged out while the page was written: the clear queued after it removes it; the app
    // and the acker must not hear of it.
    if (generation !== this.generation) throw ended();
    this.acker.applied(this.store.cursor, applied.count);
    r.pages += 1;
    r.applied += applied.count;
    r.cursor = this.store.cursor;
    r.latestVersion = page.latest_version;
    r.historyFallback ||= page.history_fallback;
    // The app hears of changes after the commit, never before.
    const h = this.handlers;
    if (page.history_fallback) h.onGap?.(page);
    if (applied.messages.length) h.onMessages?.(applied.messages);
    if (applied.recalls.length) h.onRecalls?.(applied.recalls);
    if (applied.reads.length) h.onReads?.(applied.reads);
    return page;
  }

  /** The server no longer has the history we saw: it is behind our cursor (since_ahead), or
   * the entry at our cursor is another one (history_rewritten): a restore from an older
   * backup, or a promoted replica that missed commits. Versions and message ids we have seen
   * may name other changes now, so no local version can be trusted (restarting from
   * latest_version would keep messages the server no longer has): forget the stream and
   * sync again from 0, which returns every message the server still has (the outbox
   * stays). */
  private async recover(exc: HistoryChanged): Promise<void> {
    await this.store.resetStream();
    this.acker.reset();
    this.handlers.onReset?.(exc.latestVersion);
  }

  /** Sync without waiting until the server says there is no more (has_more false). */
  async catchUp(maxPages: number | null = null): Promise<SyncResult> {
    const result = emptyResult();
    while (maxPages === null || result.pages < maxPages) {
      const page = await this.syncPage(0, result);
      if (!page.has_more) break;
    }
    return result;
  }

  /** The long-poll loop, until `signal` aborts (it returns; call wake() to end a waiting
   * long-poll at once) or the session ends (throws Unauthorized). */
  async run(signal?: AbortSignal): Promise<void> {
    let hasMore = true;
    try {
      while (!signal?.aborted) {
        const page = await this.syncPage(hasMore ? 0 : this.options.longPollTimeout, undefined, signal);
        hasMore = page.has_more;
      }
    } catch (exc) {
      if (!(exc instanceof Stopped)) throw exc;
    }
  }

  flushAcks(): Promise<number> {
    return this.acker.flush();
  }

  // -- what an app shows beyond the stream ----------------------------------------------

  recall(messageId: number): Promise<Message> {
    return this.api.recall(messageId);
  }

  markRead(peer: string, upToMessageId: number): Promise<unknown> {
    return this.api.markRead(peer, upToMessageId);
  }

  conversations(limit = 50) {
    return this.api.conversations(limit);
  }

  history(peer: string, limit = 50, beforeId: number | null = null) {
    return this.api.history(peer, limit, beforeId);
  }

  /** Stop the acker (with a final ack of what is waiting, unless `finalAck` is false). */
  async close(finalAck = true): Promise<void> {
    if (this.ackerInstance) {
      await this.ackerInstance.close(finalAck && this.store.session !== null);
      this.ackerInstance = null;
    }
    this.wake();
  }
}

class Stopped extends Error {}

function emptyResult(): SyncResult {
  return { pages: 0, applied: 0, cursor: 0, historyFallback: false, recovered: false, latestVersion: 0 };
}
