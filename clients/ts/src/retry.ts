// When and how long to wait before trying a failed call again, as the Python client's
// RetryPolicy: exponential backoff with jitter, for idempotent calls only (reads, and writes
// that carry a request id, which the gateway replays instead of applying twice).
import { Code } from "@connectrpc/connect";

import { type GatewayError, ResourceExhausted } from "./errors.js";

/** The gateway's RESOURCE_EXHAUSTED reasons that waiting can cure (a token bucket refills, a
 * stream slot frees). Without one of them it is a size limit: the same call fails every time. */
export const RETRYABLE_EXHAUSTED_REASONS: ReadonlySet<string> = new Set(["RATE_LIMITED", "TOO_MANY_STREAMS", "TOO_MANY"]);

/** The codes retried by default. INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND... never are. */
export const DEFAULT_RETRY_CODES: ReadonlySet<Code> = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted]);

export interface RetryOptions {
  /** Attempts of a unary call in all (1: no retries). Default 5. */
  maxAttempts?: number;
  /** Backoff of the first retry, ms. Default 50. */
  initialBackoffMs?: number;
  /** Largest backoff, ms. Default 2000. */
  maxBackoffMs?: number;
  /** Growth of the backoff per attempt. Default 2. */
  multiplier?: number;
  /** Up to this fraction of each backoff is taken off at random. Default 0.5. */
  jitter?: number;
  /** Codes that may be retried. Default: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED. */
  retryOn?: Iterable<Code>;
  /** Consecutive failed reconnects of a change stream before it gives up (default: never). */
  streamMaxAttempts?: number | null;
}

export class RetryPolicy {
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly multiplier: number;
  readonly jitter: number;
  readonly retryOn: ReadonlySet<Code>;
  readonly streamMaxAttempts: number | null;

  constructor(o: RetryOptions = {}) {
    this.maxAttempts = o.maxAttempts ?? 5;
    this.initialBackoffMs = o.initialBackoffMs ?? 50;
    this.maxBackoffMs = o.maxBackoffMs ?? 2000;
    this.multiplier = o.multiplier ?? 2;
    this.jitter = o.jitter ?? 0.5;
    this.retryOn = new Set(o.retryOn ?? DEFAULT_RETRY_CODES);
    this.streamMaxAttempts = o.streamMaxAttempts ?? null;
    if (!(this.maxAttempts >= 1)) throw new RangeError("maxAttempts must be >= 1");
    if (this.initialBackoffMs < 0 || this.maxBackoffMs < 0 || this.multiplier < 1) {
      throw new RangeError("backoffs must be >= 0 and multiplier >= 1");
    }
    if (!(this.jitter >= 0 && this.jitter <= 1)) throw new RangeError("jitter must be within [0, 1]");
    if (this.streamMaxAttempts !== null && this.streamMaxAttempts < 0) {
      throw new RangeError("streamMaxAttempts must be >= 0 or null");
    }
  }

  /** A policy that never retries: calls fail at once, streams do not reconnect. */
  static disabled(): RetryPolicy {
    return new RetryPolicy({ maxAttempts: 1, streamMaxAttempts: 0 });
  }

  /** True when a failed unary call may be attempted again. */
  get enabled(): boolean {
    return this.maxAttempts > 1;
  }

  /** Whether a failure may succeed when tried again. RESOURCE_EXHAUSTED only with a reason of
   * RETRYABLE_EXHAUSTED_REASONS: without one it is a size limit, which no retry can cure. */
  retryable(err: GatewayError): boolean {
    if (!this.retryOn.has(err.code)) return false;
    if (err.code === Code.ResourceExhausted) return RETRYABLE_EXHAUSTED_REASONS.has(err.reason);
    return true;
  }

  /** Milliseconds before retry number `attempt` (0-based); at least what a rate limit's
   * retry_after_ms detail says, which is when the gateway's bucket has refilled. */
  delayMs(attempt: number, err?: GatewayError): number {
    const base = Math.min(this.maxBackoffMs, this.initialBackoffMs * this.multiplier ** Math.min(attempt, 64));
    const delay = base * (1 - this.jitter * Math.random());
    return err instanceof ResourceExhausted ? Math.max(delay, err.retryAfterMs) : delay;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
