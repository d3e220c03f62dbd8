/** Errors the SDK raises; `code` is the server's problem code or one of the SDK's own. */

export class MsgsyncError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A problem+json answer the SDK does not retry. */
export class ApiError extends MsgsyncError {
  constructor(
    readonly status: number,
    code: string,
    detail: string,
    readonly body: Record<string, unknown>,
  ) {
    super(`${status} ${code}: ${detail}`, code);
  }
}

/** 401: the session is over; nothing more is sent with its token. */
export class Unauthorized extends ApiError {}

/** 409: the server no longer has the history this device has seen (a restored backup, a
 * promoted replica that missed commits). The client forgets its stream and syncs from 0. */
export class HistoryChanged extends ApiError {
  get latestVersion(): number {
    const value = this.body["latest_version"];
    return typeof value === "number" ? value : 0;
  }
}

/** 409 since_ahead: the server's stream ends before our cursor. */
export class SinceAhead extends HistoryChanged {}

/** 409 history_rewritten: the entry at our cursor (named by `since_id`) is another one on
 * the server now: versions we have seen were handed to other changes. */
export class HistoryRewritten extends HistoryChanged {}

/** A failure worth retrying: no answer (network), or 5xx / 429 with its Retry-After. */
export class Transient extends MsgsyncError {
  constructor(
    reason: string,
    readonly retryAfter: number | null = null,
  ) {
    super(reason, "unavailable");
  }
}

export class NotLoggedIn extends MsgsyncError {
  constructor() {
    super("not logged in", "not_logged_in");
  }
}

/** A sync gave up after its allowed attempts. */
export class Unavailable extends MsgsyncError {
  constructor(message: string) {
    super(message, "unavailable");
  }
}
