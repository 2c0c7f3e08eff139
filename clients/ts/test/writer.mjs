// The TypeScript writer of tests/gateway/test_cross_language.py (the Go one is
// clients/go/internal/crosswriter, same behaviour):
//
//   node test/writer.mjs ADDRESS NODE NAME COUNT TOTAL
//
// prints "ready", waits for a line on stdin, makes COUNT writes as actor NAME (a splice into
// "text", an inc of "n", a set of the field NAME), follows the document until its version is
// TOTAL and prints the snapshot at TOTAL as hex.
import { createInterface } from "node:readline";

import { BSON, Int32 } from "bson";

import { gatewayClient, hex } from "./support.mjs";

const [address, nodeName, name, countArg, totalArg] = process.argv.slice(2);
const count = Number(countArg);
const total = BigInt(totalArg);
const nodeId = new TextEncoder().encode(nodeName);
const client = gatewayClient(address);

console.log("ready");
const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));
lines.close();

for (let i = 0; i < count; i++) {
  const diff = BSON.serialize({
    ops: [
      { op: "splice", path: "text", index: new Int32(0), insert: `${name}${i};` },
      { op: "inc", path: "n", by: new Int32(1) },
      { op: "set", path: name, value: new Int32(i) },
    ],
  });
  await client.writeDiff({ nodeId, diffBson: diff, actor: name, requestId: `${name}-${i}` });
}
const abort = new AbortController();
for await (const ev of client.subscribeChanges(
  { target: { case: "nodeId", value: nodeId }, start: { case: "fromVersion", value: 0n } },
  { signal: abort.signal },
)) {
  if (ev.changes.some((c) => c.version >= total)) break;
}
abort.abort();
const snap = await client.readSnapshot({ nodeId, version: total });
console.log(hex(snap.snapshotBson));
