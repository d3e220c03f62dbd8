/** The HTTP API, one attempt per call: retrying is the caller's policy (backoff.ts). */
import { ApiError, HistoryRewritten, SinceAhead, Transient, Unauthorized } from "./errors.js";
import type {
  AckOut,
  ConversationsPage,
  HistoryPage,
  LoginOut,
  Message,
  ReadOut,
  SendOut,
  SyncPage,
} from "./types.js";

function retryAfter(response: Response): number | null {
  const value = response.headers.get("retry-after");
  if (value === null) return null;
  const seconds = Number(value);
  // An HTTP date is rare from msgsync: fall back to our own backoff.
  return Number.isFinite(seconds) ? Math.max(0, seconds) : null;
}

export class Api {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    public token: string | null = null,
    private readonly fetchImpl: typeof fetch = (...args) => fetch(...args),
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
  }

  private async call<T>(
    method: string,
    path: string,
    options: {
      json?: unknown;
      query?: Record<string, string | number>;
      signal?: AbortSignal;
      token?: string;
    } = {},
  ): Promise<T> {
    const headers: Record<string, string> = {};
    const token = options.token ?? this.token;
    if (token) headers["authorization"] = `Bearer ${token}`;
    if (options.json !== undefined) headers["content-type"] = "application/json";
    let url = this.baseUrl + path;
    if (options.query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(options.query)) params.set(k, String(v));
      url += `?${params.toString()}`;
    }
    let response: Response;
    try {
      response = await this.fetchImpl(url, {
        method,
        headers,
        body: options.json === undefined ? null : JSON.stringify(options.json),
        signal: options.signal ?? null,
      });
    } catch (exc) {
      throw new Transient(`${method} ${path}: ${String(exc)}`);
    }
    if (response.status >= 500 || response.status === 429) {
      await response.body?.cancel();
      throw new Transient(`${method} ${path}: ${response.status}`, retryAfter(response));
    }
    if (response.status >= 400) throw await problem(response);
    if (response.status === 204) return undefined as T;
    try {
      return (await response.json()) as T;
    } catch (exc) {
      // The answer was cut mid-body: as good as no answer.
      throw new Transient(`${method} ${path}: ${String(exc)}`);
    }
  }

  createUser(userId: string, password: string): Promise<{ user_id: string }> {
    return this.call("POST", "/users", { json: { user_id: userId, password } });
  }

  /** Whether an account has this id (GET /users/{user_id}): false on 404 `user_not_found`;
   * any other failure is thrown, as by every call. */
  async userExists(userId: string): Promise<boolean> {
    try {
      await this.call("GET", `/users/${encodeURIComponent(userId)}`);
      return true;
    } catch (exc) {
      if (exc instanceof ApiError && exc.code === "user_not_found") return false;
      throw exc;
    }
  }

  login(userId: string, password: string, deviceName = ""): Promise<LoginOut> {
    return this.call("POST", "/login", {
      json: { user_id: userId, password, device_name: deviceName },
    });
  }

  /** End the session of `token` (default: this Api's token) on the server. */
  logout(token?: string): Promise<void> {
    return token === undefined ? this.call("POST", "/logout") : this.call("POST", "/logout", { token });
  }

  send(to: string, body: string, clientMsgId: string): Promise<SendOut> {
    return this.call("POST", "/messages", { json: { to, body, client_msg_id: clientMsgId } });
  }

  /** `sinceId`: the id of the entry at `since` (the server answers 409 history_rewritten
   * when that entry is another one now); not sent with `since` 0. */
  sync(
    since: number,
    limit: number,
    timeout: number,
    signal?: AbortSignal,
    sinceId: string | null = null,
  ): Promise<SyncPage> {
    const query: Record<string, number | string> = { since, limit, timeout };
    if (sinceId !== null && since > 0) query["since_id"] = sinceId;
    return signal ? this.call("GET", "/sync", { query, signal }) : this.call("GET", "/sync", { query });
  }

  async ack(version: number): Promise<number> {
    const out = await this.call<AckOut>("POST", "/ack", { json: { version } });
    return out.acked_version;
  }

  conversations(limit = 50): Promise<ConversationsPage> {
    return this.call("GET", "/conversations", { query: { limit } });
  }

  history(peer: string, limit = 50, beforeId: number | null = null): Promise<HistoryPage> {
    const query: Record<string, number> = { limit };
    if (beforeId !== null) query["before_id"] = beforeId;
    return this.call("GET", `/conversations/${encodeURIComponent(peer)}/messages`, { query });
  }

  async recall(messageId: number): Promise<Message> {
    const out = await this.call<{ message: Message }>("POST", `/messages/${messageId}/recall`);
    return out.message;
  }

  markRead(peer: string, upToMessageId: number): Promise<ReadOut> {
    return this.call("POST", `/conversations/${encodeURIComponent(peer)}/read`, {
      json: { up_to_message_id: upToMessageId },
    });
  }
}

async function problem(response: Response): Promise<ApiError> {
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = await response.json();
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      body = parsed as Record<string, unknown>;
    }
  } catch {
    // not JSON: the status says enough
  }
  const code = typeof body["code"] === "string" ? body["code"] : `http_${response.status}`;
  const detail = typeof body["detail"] === "string" ? body["detail"] : response.statusText;
  if (response.status === 401) return new Unauthorized(401, code, detail, body);
  if (response.status === 409 && code === "since_ahead") {
    return new SinceAhead(409, code, detail, body);
  }
  if (response.status === 409 && code === "history_rewritten") {
    return new HistoryRewritten(409, code, detail, body);
  }
  return new ApiError(response.status, code, detail, body);
}
