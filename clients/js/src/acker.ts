/** Delayed cumulative acks: one ack covers everything durably applied so far.
 *
 * Like TCP's delayed ack: wait `ackDelay` after the first un-acked entry, or until
 * `ackEvery` entries are waiting, whichever comes first; at most one ack in flight, so a
 * fast catch-up sends one ack per `ackEvery` entries at most, never one per page. */
import { Backoff, sleep } from "./backoff.js";
import { ApiError, Transient, Unauthorized } from "./errors.js";

export interface AckerOptions {
  ackDelay: number;
  ackEvery: number;
  backoff: Backoff;
}

export class Acker {
  acked: number;
  sentCount = 0; // acks the server accepted
  error: Unauthorized | null = null;
  private target: number;
  private waiting = 0; // entries applied since the last ack was snapshotted
  private firstWaitingAt: number | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private inFlight: Promise<void> | null = null;
  private closed = false;
  private readonly stop = new AbortController();

  constructor(
    private readonly sendAck: (version: number) => Promise<number>,
    private readonly onAcked: (version: number) => Promise<void>,
    acked: number,
    private readonly options: AckerOptions,
  ) {
    this.acked = acked;
    this.target = acked;
  }

  /** Called after a page and its cursor are committed locally, never before: the server
   * may prune what it sees acked, so only what is durable here is acked. */
  applied(cursor: number, count: number): void {
    if (cursor <= this.target || this.closed) return;
    this.target = cursor;
    this.waiting += count;
    this.firstWaitingAt ??= Date.now();
    this.schedule();
  }

  /** since_ahead recovery: the local stream restarts from 0. */
  reset(): void {
    this.target = this.acked = 0;
    this.waiting = 0;
    this.firstWaitingAt = null;
    this.clearTimer();
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Decide when the next ack goes: now, after the delay's remainder, or (one in flight)
   * when that one is answered: an ack covers everything before it, so two at once never
   * help. */
  private schedule(): void {
    if (this.inFlight !== null || this.closed || this.error !== null) return;
    if (this.target <= this.acked) return;
    if (this.waiting >= this.options.ackEvery) {
      this.clearTimer();
      this.fire();
      return;
    }
    if (this.timer !== null) return;
    const elapsed = Date.now() - (this.firstWaitingAt ?? Date.now());
    const remaining = Math.max(0, this.options.ackDelay * 1000 - elapsed);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.fire();
    }, remaining);
  }

  private fire(): void {
    this.inFlight = this.ackNow().finally(() => {
      this.inFlight = null;
      this.schedule();
    });
  }

  private async ackNow(): Promise<void> {
    // Snapshot first: entries applied while this ack is in flight start a new batch.
    const version = this.target;
    this.waiting = 0;
    this.firstWaitingAt = null;
    const backoff = this.options.backoff;
    for (;;) {
      try {
        await this.sendAck(version);
        break;
      } catch (exc) {
        if (exc instanceof Transient && !this.closed) {
          await sleep(backoff.nextDelay(exc.retryAfter), this.stop.signal);
          if (this.closed) return;
          continue;
        }
        if (exc instanceof Unauthorized) {
          this.error = exc; // the sync loop raises it: the session is over
          return;
        }
        // ack_ahead: the server's stream went back (the next sync recovers); nothing to
        // retry. A transient failure while closing: the final ack takes over.
        if (exc instanceof ApiError || exc instanceof Transient) return;
        throw exc;
      }
    }
    backoff.reset();
    this.sentCount += 1;
    // The server's cursor may be higher (it never moves back); ours is what we acked.
    this.acked = Math.max(this.acked, version);
    await this.onAcked(this.acked);
  }

  /** Wait until everything applied is acked, by the normal policy (the delay timer). */
  async flush(): Promise<number> {
    while (this.target > this.acked) {
      if (this.error) throw this.error;
      if (this.inFlight) await this.inFlight;
      else if (this.timer !== null) await sleep(0.01);
      else this.fire();
    }
    if (this.error) throw this.error;
    return this.acked;
  }

  /** Stop; with finalAck, first ack what is still waiting (one attempt, best effort). */
  async close(finalAck = true): Promise<void> {
    this.closed = true;
    this.clearTimer();
    this.stop.abort();
    if (this.inFlight) await this.inFlight;
    if (finalAck && this.target > this.acked && this.error === null) {
      try {
        await this.sendAck(this.target);
        this.sentCount += 1;
        this.acked = Math.max(this.acked, this.target);
        await this.onAcked(this.acked);
      } catch {
        // A lost final ack costs only a re-delivery that the version check skips.
      }
    }
  }
}
