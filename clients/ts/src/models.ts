// What the client returns: plain objects with decoded BSON (the Python client's models).
// Subscription events are a union discriminated by `kind`.
import type { DeserializeOptions, Document } from "bson";

import { decode, nodeString } from "./codec.js";
import type * as pb from "./gen/virtualdom/v1/gateway_pb.js";

/** A vector clock: actor -> counter. */
export type Clock = Record<string, bigint>;

/** A durable write. `diff` is the effective diff (decoded; {} when nothing changed, or when the
 * gateway left it out of a write too large to echo), `replayed` whether the gateway answered an
 * earlier write with the same `requestId` instead of applying this one again. */
export interface WriteResult {
  version: bigint;
  clock: Clock;
  diff: Document;
  diffBson: Uint8Array;
  update: Uint8Array;
  replayed: boolean;
  requestId: string;
}

/** A document read: `document` at `version`; `value` is what is at the asked `path` (the whole
 * document without one); `raw` the BSON as stored; `state` the Yjs v1 state when asked for. */
export interface Snapshot {
  document: Document;
  value: unknown;
  version: bigint;
  clock: Clock;
  raw: Uint8Array;
  state: Uint8Array;
  path: string;
}

/** One change of one document: `version` is the document's version after it (gap-free per
 * document), `diff` the effective change against version - 1, `resumeToken` its position in the
 * gateway's log (pass it back as `resumeToken` to continue after it). */
export interface Change {
  kind: "change";
  nodeId: string;
  version: bigint;
  clock: Clock;
  diff: Document;
  diffBson: Uint8Array;
  update: Uint8Array;
  actor: string;
  timestamp: Date;
  timestampUs: bigint;
  metadata: Record<string, string>;
  resumeToken: Uint8Array;
}

/** A document's state at the start of a sendSnapshot subscription. */
export interface SnapshotEvent {
  kind: "snapshot";
  nodeId: string;
  version: bigint;
  clock: Clock;
  document: Document;
  raw: Uint8Array;
  resumeToken: Uint8Array;
}

/** Heartbeat: the subscriber has every change up to `resumeToken`. */
export interface Progress {
  kind: "progress";
  resumeToken: Uint8Array;
  timestamp: Date;
}

export type SubscriptionEvent = Change | SnapshotEvent | Progress;

function clock(msg: pb.VectorClock | undefined): Clock {
  return { ...(msg?.counters ?? {}) };
}

const date = (us: bigint): Date => new Date(Number(us / 1000n));

export function writeResult(msg: pb.WriteDiffResponse, requestId: string, opts: DeserializeOptions): WriteResult {
  return {
    version: msg.newVersion,
    clock: clock(msg.vectorClock),
    diff: decode(msg.effectiveDiffBson, opts),
    diffBson: msg.effectiveDiffBson,
    update: msg.update,
    replayed: msg.replayed,
    requestId,
  };
}

export function snapshot(msg: pb.ReadSnapshotResponse, path: string, opts: DeserializeOptions): Snapshot {
  const document = decode(msg.snapshotBson, opts);
  return {
    document,
    // A sub-path read answers {value: <what is at the path>}.
    value: path ? document["value"] : document,
    version: msg.version,
    clock: clock(msg.vectorClock),
    raw: msg.snapshotBson,
    state: msg.state,
    path,
  };
}

export function change(msg: pb.Change, opts: DeserializeOptions): Change {
  return {
    kind: "change",
    nodeId: nodeString(msg.nodeId),
    version: msg.version,
    clock: clock(msg.vectorClock),
    diff: decode(msg.diffBson, opts),
    diffBson: msg.diffBson,
    update: msg.update,
    actor: msg.actor,
    timestamp: date(msg.timestampUs),
    timestampUs: msg.timestampUs,
    metadata: { ...msg.metadata },
    resumeToken: msg.resumeToken,
  };
}

export function snapshotEvent(msg: pb.SnapshotEvent, opts: DeserializeOptions): SnapshotEvent {
  return {
    kind: "snapshot",
    nodeId: nodeString(msg.nodeId),
    version: msg.version,
    clock: clock(msg.vectorClock),
    document: decode(msg.snapshotBson, opts),
    raw: msg.snapshotBson,
    resumeToken: msg.resumeToken,
  };
}

export function progress(msg: pb.Progress): Progress {
  return { kind: "progress", resumeToken: msg.resumeToken, timestamp: date(msg.timestampUs) };
}
