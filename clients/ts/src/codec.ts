// BSON <-> JavaScript with the bson package (7.x). Documents decode to plain objects; int64
// values decode to bigint (useBigInt64) so they keep their type and precision on a round trip
// (bigint encodes back as int64), int32 and double to number; ObjectId, Decimal128, Binary,
// Timestamp... to the bson package's classes. Pass `bson` options to GatewayClient to change it.
import { BSON, type DeserializeOptions, type Document } from "bson";

export type { Document };

/** One op of a diff (docs/diff-format.md), e.g. {op: "set", path: "title", value: "Hi"}. */
export type Op = Document & { op: string; path?: string | (string | number)[] };

/** A diff as the client takes it: a list of ops, a whole diff document ({ops: [...]} or
 * {update: Uint8Array}) or its encoded BSON bytes. */
export type Diff = readonly Op[] | Document | Uint8Array;

export const DEFAULT_BSON_OPTIONS: DeserializeOptions = { useBigInt64: true };

export function encodeDiff(diff: Diff): Uint8Array {
  if (diff instanceof Uint8Array) return diff;
  if (Array.isArray(diff)) return BSON.serialize({ ops: diff });
  return BSON.serialize(diff as Document);
}

/** One BSON document ({} for empty bytes: nothing changed, or too large to echo back). */
export function decode(data: Uint8Array, options: DeserializeOptions = DEFAULT_BSON_OPTIONS): Document {
  return data.length === 0 ? {} : BSON.deserialize(data, options);
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** A node id (or prefix) as the bytes the gateway takes. */
export function nodeBytes(id: string | Uint8Array): Uint8Array {
  return typeof id === "string" ? utf8.encode(id) : id;
}

/** A node id the gateway sent (always UTF-8). */
export function nodeString(raw: Uint8Array): string {
  return fromUtf8.decode(raw);
}

/** A path as the gateway takes it: "a.b.0" or ["a", "b", 0]. */
export function dotted(path: string | readonly (string | number)[] | undefined): string {
  if (path === undefined) return "";
  return typeof path === "string" ? path : path.map(String).join(".");
}
