// GatewayClient: the idiomatic wrapper of the generated MemoryGateway client, over any connect
// Transport (gRPC from Node: ./node.js; Connect or gRPC-Web from browsers: ./web.js).
import { type CallOptions, type Client, createClient, type Transport } from "@connectrpc/connect";
import { BSON, type DeserializeOptions } from "bson";

import { DEFAULT_BSON_OPTIONS, type Diff, dotted, encodeDiff, nodeBytes } from "./codec.js";
import { errorFrom, type GatewayError } from "./errors.js";
import { MemoryGateway, type ReadSnapshotResponse } from "./gen/virtualdom/v1/gateway_pb.js";
import { type Snapshot, snapshot, type WriteResult, writeResult } from "./models.js";
import { pause, RetryPolicy, type RetryOptions } from "./retry.js";
import { Subscription } from "./subscription.js";

/** A bearer token, or a function returning the current one (asked before each call and each
 * stream reconnect, so it can refresh). */
export type TokenSource = string | (() => string | Promise<string>);

export type NodeId = string | Uint8Array;
export type Path = string | readonly (string | number)[];

export interface ClientOptions {
  /** Retries of idempotent calls and stream reconnects (a RetryPolicy or its options). */
  retry?: RetryPolicy | RetryOptions;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: TokenSource;
  /** Default deadline of each unary attempt, ms (undefined: none). */
  timeoutMs?: number;
  /** How BSON decodes (default: int64 as bigint, see codec.ts). */
  bson?: DeserializeOptions;
  /** Called before each retry (for logging or metrics). */
  onRetry?: (info: { attempt: number; delayMs: number; error: GatewayError }) => void;
}

export interface WriteOptions {
  /** The vector clock the diff was made against (undefined: the current state). */
  context?: Record<string, bigint | number>;
  /** Makes the write idempotent; one is generated when retries are enabled, so a retried write
   * is replayed by the gateway, never applied twice. */
  requestId?: string;
  /** Apply only if the document is at this version (VersionMismatch otherwise). */
  expectedVersion?: bigint | number;
  actor?: string;
  metadata?: Record<string, string>;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ReadOptions {
  /** A retained past version (HistoryCompacted if it is gone); default the latest. */
  version?: bigint | number;
  /** Only the value at this path ("a.b.0" or ["a", "b", 0]): Snapshot.value holds it. */
  path?: Path;
  /** Also return the full CRDT state (Yjs v1) of the latest version. */
  includeState?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface SubscribeOptions {
  /** Follow one document... */
  nodeId?: NodeId;
  /** ...or every document whose id starts with this ("" = all). */
  prefix?: NodeId;
  /** Single document: changes after this version (0 = its whole history). */
  fromVersion?: bigint | number;
  /** The resumeToken of the last event seen: continue after it. */
  resumeToken?: Uint8Array;
  /** First yield a SnapshotEvent per document. */
  sendSnapshot?: boolean;
  /** Add the Yjs update to each change. */
  includeUpdate?: boolean;
  /** Also yield the gateway's Progress heartbeats (every heartbeatMs; 0 = its default). */
  progress?: boolean;
  heartbeatMs?: number;
}

/** A client of one MemoryGateway. Example (Node, gRPC):
 *
 *   const client = connectNode("127.0.0.1:50051", { token: () => idp.token() });
 *   const w = await client.write("notes/1", [{ op: "set", path: "title", value: "Hi" }]);
 *   const snap = await client.read("notes/1");            // {document, version, clock, ...}
 *   for await (const ev of client.subscribe({ nodeId: "notes/1", fromVersion: 0 })) { ... }
 */
export class GatewayClient {
  /** The generated client, for what the wrapper does not cover (sessions). */
  readonly raw: Client<typeof MemoryGateway>;
  readonly retry: RetryPolicy;
  private readonly opts: ClientOptions;
  private readonly bson: DeserializeOptions;

  constructor(transport: Transport, options: ClientOptions = {}) {
    this.raw = createClient(MemoryGateway, transport);
    this.retry = options.retry instanceof RetryPolicy ? options.retry : new RetryPolicy(options.retry);
    this.bson = options.bson ?? DEFAULT_BSON_OPTIONS;
    this.opts = options;
  }

  /** Apply a diff to a document, durably (a new nodeId creates the document). `diff` is a list
   * of ops (sent as {ops}), a whole diff document ({ops} or {update}) or its BSON bytes. */
  async write(nodeId: NodeId, diff: Diff, o: WriteOptions = {}): Promise<WriteResult> {
    const requestId = o.requestId ?? (this.retry.enabled ? crypto.randomUUID() : "");
    const counters: Record<string, bigint> = {};
    for (const [actor, n] of Object.entries(o.context ?? {})) counters[actor] = BigInt(n);
    const request = {
      nodeId: nodeBytes(nodeId),
      diffBson: encodeDiff(diff),
      vectorClock: o.context ? { counters } : undefined,
      metadata: o.metadata ?? {},
      requestId,
      expectedVersion: o.expectedVersion === undefined ? undefined : BigInt(o.expectedVersion),
      actor: o.actor ?? "",
    };
    const resp = await this.call((opts) => this.raw.writeDiff(request, opts), requestId !== "", o);
    return writeResult(resp, requestId, this.bson);
  }

  /** Apply a raw CRDT update (Yjs v1 bytes): `write` of {update}. */
  writeUpdate(nodeId: NodeId, update: Uint8Array, o: WriteOptions = {}): Promise<WriteResult> {
    return this.write(nodeId, BSON.serialize({ update }), o);
  }

  /** Read a document (NotFound if it does not exist). */
  async read(nodeId: NodeId, o: ReadOptions = {}): Promise<Snapshot> {
    const path = dotted(o.path);
    return snapshot(await this.readResponse(nodeId, path, o), path, this.bson);
  }

  /** Like read, but the snapshot's BSON bytes as stored, undecoded. */
  async readRaw(nodeId: NodeId, o: ReadOptions = {}): Promise<Uint8Array> {
    return (await this.readResponse(nodeId, dotted(o.path), o)).snapshotBson;
  }

  private readResponse(nodeId: NodeId, path: string, o: ReadOptions): Promise<ReadSnapshotResponse> {
    const request = {
      nodeId: nodeBytes(nodeId),
      version: o.version === undefined ? undefined : BigInt(o.version),
      path,
      includeState: o.includeState ?? false,
    };
    return this.call((opts) => this.raw.readSnapshot(request, opts), true, o);
  }

  /** Follow a document or a prefix; an async iterator that survives disconnects and gateway
   * restarts (see Subscription). */
  subscribe(o: SubscribeOptions): Subscription {
    return new Subscription(this.raw, this.retry, this.bson, {
      nodeId: o.nodeId === undefined ? undefined : nodeBytes(o.nodeId),
      prefix: o.prefix === undefined ? undefined : nodeBytes(o.prefix),
      fromVersion: o.fromVersion === undefined ? undefined : BigInt(o.fromVersion),
      resumeToken: o.resumeToken,
      sendSnapshot: o.sendSnapshot ?? false,
      includeUpdate: o.includeUpdate ?? false,
      heartbeatMs: o.heartbeatMs ?? 0,
      progress: o.progress ?? false,
    }, () => this.headers());
  }

  /** The authorization header of the next call (the token function is asked each time). */
  async headers(): Promise<Record<string, string> | undefined> {
    const source = this.opts.token;
    if (source === undefined) return undefined;
    const token = typeof source === "string" ? source : await source();
    return { authorization: `Bearer ${token}` };
  }

  /** One unary call, retried with backoff on retryable failures when idempotent. */
  private async call<T>(
    invoke: (opts: CallOptions) => Promise<T>,
    idempotent: boolean,
    o: { timeoutMs?: number; signal?: AbortSignal },
  ): Promise<T> {
    const timeoutMs = o.timeoutMs ?? this.opts.timeoutMs;
    for (let attempt = 0; ; ) {
      try {
        const headers = await this.headers();
        return await invoke({ headers, timeoutMs, signal: o.signal });
      } catch (err) {
        const error = errorFrom(err);
        attempt += 1;
        if (!idempotent || attempt >= this.retry.maxAttempts || !this.retry.retryable(error) || o.signal?.aborted) {
          throw error;
        }
        const delayMs = this.retry.delayMs(attempt - 1, error);
        this.opts.onRetry?.({ attempt, delayMs, error });
        await pause(delayMs, o.signal);
      }
    }
  }
}
