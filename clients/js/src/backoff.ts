/** Retry delays: exponential backoff with full jitter, never shorter than Retry-After. */

export class Backoff {
  attempt = 0;

  constructor(
    readonly base = 0.5,
    readonly cap = 30,
    private readonly random: () => number = Math.random,
  ) {}

  /** Seconds to wait before the next retry. Full jitter spreads clients that failed
   * together (a server restart) over the whole window instead of returning in step; the
   * server's Retry-After is a floor, since it knows when it expects to be back. */
  nextDelay(retryAfter: number | null = null): number {
    const window = Math.min(this.cap, this.base * 2 ** this.attempt);
    this.attempt += 1;
    return Math.max(this.random() * window, retryAfter ?? 0);
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Sleep `seconds`, ended early (resolving) when `signal` aborts: a client that comes back
 * online retries at once instead of finishing a long backoff. */
export function sleep(seconds: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, seconds * 1000);
    signal?.addEventListener("abort", done, { once: true });
  });
}
