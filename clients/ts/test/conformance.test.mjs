// The conformance vectors (tests/conformance/*.json, see its README) against a running gateway,
// from Node with @connectrpc/connect-node and the bson package.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { BSON, EJSON } from "bson";

import { ROOT, errorOf, gatewayClient, hex, startGateway, unhex } from "./support.mjs";

const DIR = join(ROOT, "tests", "conformance");
const files = readdirSync(DIR).filter((f) => f.endsWith(".json")).sort();

let gw;
let client;
before(async () => {
  gw = await startGateway();
  client = gatewayClient(gw.address);
});
after(async () => gw?.stop());

/** What the bson package makes of a vector's canonical Extended JSON (Int32/Long/Double kept). */
function ejsonBytes(value) {
  return hex(BSON.serialize(EJSON.deserialize(value, { relaxed: false })));
}

test("there are vectors", () => assert.ok(files.length >= 2, files.join(",")));

for (const file of files) {
  const vectors = JSON.parse(readFileSync(join(DIR, file), "utf8"));
  assert.equal(vectors.format, "virtualdom-conformance/1");
  for (const c of vectors.cases) {
    test(`${file} ${c.name}`, async () => {
      const node = new TextEncoder().encode(`conformance/ts/${file}/${c.name}`);
      let last = null;
      for (const [i, step] of c.steps.entries()) {
        const where = `step ${i}`;
        if (step.read) {
          const resp = await client.readSnapshot({
            nodeId: node,
            version: step.read.version === undefined ? undefined : BigInt(step.read.version),
            path: step.read.path ?? "",
          });
          assert.equal(hex(resp.snapshotBson), step.expect.snapshot_hex, where);
          continue;
        }
        if (step.diff !== null) assert.equal(ejsonBytes(step.diff), step.diff_hex, `${where} diff EJSON`);
        const req = { nodeId: node, diffBson: unhex(step.diff_hex) };
        if (step.expected_version !== undefined) req.expectedVersion = BigInt(step.expected_version);
        if (step.error) {
          await assert.rejects(client.writeDiff(req), (err) => {
            const got = errorOf(err);
            assert.equal(got.code, step.error.code, `${where}: ${got.message}`);
            assert.equal(got.reason, step.error.reason, `${where}: ${got.message}`);
            return true;
          });
          if (last) {
            const now = await client.readSnapshot({ nodeId: node });
            assert.equal(hex(now.snapshotBson), last.hex, `${where}: a rejected diff changed the document`);
            assert.equal(now.version, last.version, where);
          }
          continue;
        }
        const w = await client.writeDiff(req);
        assert.equal(w.newVersion, BigInt(step.expect.version), where);
        assert.equal(hex(w.effectiveDiffBson), step.expect.effective_diff_hex, `${where} effective diff`);
        const snap = await client.readSnapshot({ nodeId: node });
        assert.equal(hex(snap.snapshotBson), step.expect.snapshot_hex, `${where} snapshot`);
        assert.equal(ejsonBytes(step.expect.snapshot), step.expect.snapshot_hex, `${where} snapshot EJSON`);
        if (step.expect.effective_diff !== null) {
          assert.equal(ejsonBytes(step.expect.effective_diff), step.expect.effective_diff_hex, `${where} diff EJSON`);
        }
        last = { hex: hex(snap.snapshotBson), version: snap.version };
      }
    });
  }
}
