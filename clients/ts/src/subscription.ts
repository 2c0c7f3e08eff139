// Resumable change streams (SubscribeChanges), as the Python client's Subscription: when the
// stream breaks (the gateway restarts, the connection drops: UNAVAILABLE and the other
// retryable codes) it reconnects with backoff and continues right after the last event it
// delivered: from the last version for a single document, from the last resume token for a
// prefix (the gateway's shutdown status carries one). Changes it already delivered are dropped
// if the gateway sends them again, so every document's versions arrive once each, in order.
import { Code, type Client } from "@connectrpc/connect";
import type { DeserializeOptions } from "bson";

import { errorFrom, Unavailable } from "./errors.js";
import { type ChangeEvent, type MemoryGateway, type SubscribeRequest } from "./gen/virtualdom/v1/gateway_pb.js";
import { change, progress, snapshotEvent, type SubscriptionEvent } from "./models.js";
import { type RetryPolicy, pause } from "./retry.js";
import { nodeString } from "./codec.js";

type Request = Omit<SubscribeRequest, "$typeName" | "$unknown">;

export interface SubscriptionTarget {
  nodeId?: Uint8Array | undefined;
  prefix?: Uint8Array | undefined;
  fromVersion?: bigint | undefined;
  resumeToken?: Uint8Array | undefined;
  sendSnapshot: boolean;
  includeUpdate: boolean;
  heartbeatMs: number;
  progress: boolean;
}

/** An async iterator over one document's or one prefix's changes; see GatewayClient.subscribe.
 *
 * Breaking out of a `for await` over it, or `close()`, cancels the stream. `lastVersion` and
 * `resumeToken` say where it is, to persist and pass back as fromVersion / resumeToken later. */
export class Subscription implements AsyncIterable<SubscriptionEvent> {
  /** How many times the stream was re-established. */
  reconnects = 0;
  private readonly abort = new AbortController();
  private lastVer: bigint | undefined;
  private token: Uint8Array | undefined;
  // Per-document versions delivered (prefix subscriptions): drops replays after a resume.
  private readonly seen = new Map<string, bigint>();
  // False until the initial snapshots are known to be complete.
  private snapshotsDone: boolean;
  private started = false;

  constructor(
    private readonly client: Client<typeof MemoryGateway>,
    private readonly retry: RetryPolicy,
    private readonly bson: DeserializeOptions,
    private readonly t: SubscriptionTarget,
    private readonly headers: () => Promise<HeadersInit | undefined>,
  ) {
    if ((t.nodeId === undefined) === (t.prefix === undefined)) throw new TypeError("give exactly one of nodeId and prefix");
    if (t.fromVersion !== undefined && t.resumeToken !== undefined) {
      throw new TypeError("give at most one of fromVersion and resumeToken");
    }
    if (t.fromVersion !== undefined && t.nodeId === undefined) {
      throw new TypeError("fromVersion is for single-document subscriptions; use resumeToken");
    }
    if (t.fromVersion !== undefined && t.fromVersion < 0n) throw new RangeError("fromVersion must be >= 0");
    this.lastVer = t.fromVersion;
    this.token = t.resumeToken;
    this.snapshotsDone = !t.sendSnapshot;
  }

  /** The version of the last event delivered (single-document subscriptions). */
  get lastVersion(): bigint | undefined {
    return this.lastVer;
  }

  /** The log position the stream is at (resume a prefix subscription from it). */
  get resumeToken(): Uint8Array | undefined {
    return this.token;
  }

  /** Stop: cancel the stream (a `for await` waiting in another task ends). */
  close(): void {
    this.abort.abort();
  }

  [Symbol.asyncIterator](): AsyncIterator<SubscriptionEvent> {
    if (this.started) throw new TypeError("a Subscription is iterated once");
    this.started = true;
    return this.run();
  }

  private request(): Request {
    const t = this.t;
    const req: Request = {
      target: t.nodeId !== undefined ? { case: "nodeId", value: t.nodeId } : { case: "prefix", value: t.prefix ?? new Uint8Array() },
      start: { case: undefined },
      sendSnapshot: false,
      includeUpdate: t.includeUpdate,
      heartbeatMs: t.heartbeatMs,
    };
    if (!this.snapshotsDone) {
      // Start (again) as asked: the snapshots already delivered are filtered out.
      req.sendSnapshot = true;
      if (t.fromVersion !== undefined) req.start = { case: "fromVersion", value: t.fromVersion };
      else if (t.resumeToken !== undefined) req.start = { case: "resumeToken", value: t.resumeToken };
    } else if (t.nodeId !== undefined && this.lastVer !== undefined) {
      req.start = { case: "fromVersion", value: this.lastVer };
    } else if (this.token !== undefined) {
      req.start = { case: "resumeToken", value: this.token };
    }
    return req;
  }

  private seenVersion(node: string): bigint | undefined {
    return this.t.nodeId !== undefined ? this.lastVer : this.seen.get(node);
  }

  private mark(node: string, version: bigint): void {
    if (this.t.nodeId !== undefined) this.lastVer = version;
    else this.seen.set(node, version);
  }

  private events(msg: ChangeEvent): SubscriptionEvent[] {
    const out: SubscriptionEvent[] = [];
    for (const s of msg.snapshots) {
      const node = nodeString(s.nodeId);
      const seen = this.seenVersion(node);
      if (seen !== undefined && s.version <= seen) continue;
      this.mark(node, s.version);
      out.push(snapshotEvent(s, this.bson));
      if (this.t.nodeId !== undefined) this.snapshotsDone = true;
    }
    for (const c of msg.changes) {
      const node = nodeString(c.nodeId);
      this.token = c.resumeToken;
      this.snapshotsDone = true;
      const seen = this.seenVersion(node);
      if (seen !== undefined && c.version <= seen) continue; // delivered before the resume
      this.mark(node, c.version);
      out.push(change(c, this.bson));
    }
    if (msg.progress) {
      this.token = msg.progress.resumeToken;
      this.snapshotsDone = true;
      if (this.t.progress) out.push(progress(msg.progress));
    }
    return out;
  }

  private async *run(): AsyncGenerator<SubscriptionEvent, void, undefined> {
    const signal = this.abort.signal;
    const limit = this.retry.streamMaxAttempts;
    let failures = 0;
    try {
      while (!signal.aborted) {
        try {
          const headers = await this.headers();
          const stream = this.client.subscribeChanges(this.request(), { signal, headers });
          for await (const msg of stream) {
            failures = 0;
            for (const event of this.events(msg)) yield event;
          }
          return; // the gateway ended the stream normally
        } catch (err) {
          if (signal.aborted) return;
          const error = errorFrom(err);
          // A server that stops past its grace period cancels the streams still open.
          if (!this.retry.retryable(error) && error.code !== Code.Canceled) throw error;
          if (error instanceof Unavailable && error.resumeToken.length > 0) {
            // The gateway's shutdown status: everything up to the token was sent.
            this.token = error.resumeToken;
            this.snapshotsDone = true;
          }
          if (limit !== null && failures >= limit) throw error;
          await pause(this.retry.delayMs(failures, error), signal);
          failures += 1;
          this.reconnects += 1;
        }
      }
    } finally {
      this.abort.abort(); // a consumer that stopped iterating ends the stream
    }
  }
}
