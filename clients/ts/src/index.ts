// @virtualdom/client: the transport-independent part. Transports: "@virtualdom/client/node"
// (gRPC, connectNode) and "@virtualdom/client/web" (Connect / gRPC-Web, connectWeb); the Yjs
// helper: "@virtualdom/client/yjs" (bindYDoc); the generated code: "@virtualdom/client/gen".
export {
  type ClientOptions,
  GatewayClient,
  type NodeId,
  type Path,
  type ReadOptions,
  type SubscribeOptions,
  type TokenSource,
  type WriteOptions,
} from "./client.js";
export { DEFAULT_BSON_OPTIONS, type Diff, type Document, type Op, nodeBytes, nodeString } from "./codec.js";
export * from "./errors.js";
export type { Change, Clock, Progress, Snapshot, SnapshotEvent, SubscriptionEvent, WriteResult } from "./models.js";
export { DEFAULT_RETRY_CODES, RETRYABLE_EXHAUSTED_REASONS, RetryPolicy, type RetryOptions } from "./retry.js";
export { Subscription } from "./subscription.js";
