// Typed errors: every failed call rejects with a GatewayError subclass, chosen from the status
// code and, when the gateway attached one, the ErrorDetail in the status details (its `reason`
// picks the subclass), as the Python client's virtualdom.client.errors does:
//
//   GatewayError                 .code .codeName .reason .detail
//   ├── InvalidArgument          malformed BSON / diff / update, bad path, bad request
//   │   └── LimitExceeded        .limit .allowed .actual
//   ├── NotFound                 the document does not exist
//   ├── FailedPrecondition
//   │   ├── VersionMismatch      .currentVersion (expectedVersion did not match)
//   │   └── MissingDependencies  the causal context names changes the gateway has not seen
//   ├── OutOfRange
//   │   └── HistoryCompacted     .oldestVersion .resumeToken (resync from a snapshot)
//   ├── ResourceExhausted        a gateway cap or a message-size limit; .retryAfterMs .limit
//   │   ├── RateLimited          the caller's writes/s or bytes/s budget is spent
//   │   └── TooManyStreams       the caller or connection has too many open streams
//   ├── Unauthenticated          no token, or one that does not verify
//   ├── PermissionDenied         the token's grants do not cover the node (or the actor)
//   ├── Unavailable              .resumeToken (retryable: gateway down or restarting)
//   │   └── ShuttingDown         the gateway's graceful-shutdown status
//   ├── DeadlineExceeded
//   ├── Cancelled
//   └── Internal
import { Code, ConnectError } from "@connectrpc/connect";

import { type ErrorDetail, ErrorDetailSchema } from "./gen/virtualdom/v1/gateway_pb.js";

/** "InvalidArgument" -> "INVALID_ARGUMENT": the proto's (and every other client's) names. */
export function codeName(code: Code): string {
  return (Code[code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** A failed gateway call: the status `code`, the gateway's `reason` ("" without a detail). */
export class GatewayError extends Error {
  override name = "GatewayError";
  readonly code: Code;
  readonly codeName: string;
  readonly reason: string;
  readonly detail: ErrorDetail | undefined;
  /** The message as the gateway sent it (without connect's "[code]" prefix). */
  readonly rawMessage: string;

  constructor(message: string, code: Code, detail?: ErrorDetail, options?: { cause?: unknown }) {
    super(`${codeName(code)}: ${message}`, options);
    this.rawMessage = message;
    this.code = code;
    this.codeName = codeName(code);
    this.detail = detail;
    this.reason = detail?.reason ?? "";
  }
}

export class InvalidArgument extends GatewayError {
  override name = "InvalidArgument";
}
/** A configured limit was exceeded: `limit` names it, `allowed`/`actual` are sizes. */
export class LimitExceeded extends InvalidArgument {
  override name = "LimitExceeded";
  get limit(): string {
    return this.detail?.limit ?? "";
  }
  get allowed(): bigint {
    return this.detail?.allowed ?? 0n;
  }
  get actual(): bigint {
    return this.detail?.actual ?? 0n;
  }
}
export class NotFound extends GatewayError {
  override name = "NotFound";
}
export class FailedPrecondition extends GatewayError {
  override name = "FailedPrecondition";
}
/** The expectedVersion precondition failed; `currentVersion` is the document's. */
export class VersionMismatch extends FailedPrecondition {
  override name = "VersionMismatch";
  get currentVersion(): bigint {
    return this.detail?.version ?? 0n;
  }
}
export class MissingDependencies extends FailedPrecondition {
  override name = "MissingDependencies";
}
export class OutOfRange extends GatewayError {
  override name = "OutOfRange";
}
/** The history asked for was compacted away: resync from a snapshot. */
export class HistoryCompacted extends OutOfRange {
  override name = "HistoryCompacted";
  get oldestVersion(): bigint {
    return this.detail?.version ?? 0n;
  }
  get resumeToken(): Uint8Array {
    return this.detail?.resumeToken ?? new Uint8Array();
  }
}
/** A gateway cap or a size limit; `retryAfterMs` > 0 when the gateway said waiting helps. */
export class ResourceExhausted extends GatewayError {
  override name = "ResourceExhausted";
  get retryAfterMs(): number {
    return Number(this.detail?.retryAfterMs ?? 0n);
  }
  get limit(): string {
    return this.detail?.limit ?? "";
  }
}
export class RateLimited extends ResourceExhausted {
  override name = "RateLimited";
}
export class TooManyStreams extends ResourceExhausted {
  override name = "TooManyStreams";
}
export class Unauthenticated extends GatewayError {
  override name = "Unauthenticated";
}
export class PermissionDenied extends GatewayError {
  override name = "PermissionDenied";
}
/** The gateway is unreachable or restarting; `resumeToken` is set when a stream ended because
 * the gateway shuts down (everything up to it was sent). */
export class Unavailable extends GatewayError {
  override name = "Unavailable";
  get resumeToken(): Uint8Array {
    return this.detail?.resumeToken ?? new Uint8Array();
  }
}
export class ShuttingDown extends Unavailable {
  override name = "ShuttingDown";
}
export class DeadlineExceeded extends GatewayError {
  override name = "DeadlineExceeded";
}
export class Cancelled extends GatewayError {
  override name = "Cancelled";
}
export class Internal extends GatewayError {
  override name = "Internal";
}

type ErrorClass = new (message: string, code: Code, detail?: ErrorDetail, options?: { cause?: unknown }) => GatewayError;

const BY_CODE = new Map<Code, ErrorClass>([
  [Code.InvalidArgument, InvalidArgument],
  [Code.NotFound, NotFound],
  [Code.FailedPrecondition, FailedPrecondition],
  [Code.OutOfRange, OutOfRange],
  [Code.ResourceExhausted, ResourceExhausted],
  [Code.Unavailable, Unavailable],
  [Code.DeadlineExceeded, DeadlineExceeded],
  [Code.Canceled, Cancelled],
  [Code.Internal, Internal],
  [Code.Unauthenticated, Unauthenticated],
  [Code.PermissionDenied, PermissionDenied],
]);

const BY_REASON = new Map<string, ErrorClass>([
  ["LIMIT_EXCEEDED", LimitExceeded],
  ["VERSION_MISMATCH", VersionMismatch],
  ["MISSING_DEPENDENCIES", MissingDependencies],
  ["HISTORY_COMPACTED", HistoryCompacted],
  ["SHUTTING_DOWN", ShuttingDown],
  ["RATE_LIMITED", RateLimited],
  ["TOO_MANY_STREAMS", TooManyStreams],
]);

/** The typed error of anything a call threw (a ConnectError, a network error, ...). */
export function errorFrom(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = ConnectError.from(err);
  const [detail] = e.findDetails(ErrorDetailSchema);
  let cls = BY_CODE.get(e.code) ?? GatewayError;
  const special = detail ? BY_REASON.get(detail.reason) : undefined;
  // A reason only refines its own code's class (a stray reason never changes the code's meaning).
  if (special !== undefined && special.prototype instanceof cls) cls = special;
  return new cls(e.rawMessage, e.code, detail, { cause: err });
}
