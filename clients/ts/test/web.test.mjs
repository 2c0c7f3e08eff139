// connectWeb (@connectrpc/connect-web, on Node's fetch) against the gateway's HTTP port: the
// Connect protocol and gRPC-Web, binary and JSON: write, read, a typed error with its
// ErrorDetail, a subscription. Skipped, saying so, on a gateway whose HTTP port does not serve
// Connect yet (it is on branch `web` until that lands).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { VersionMismatch } from "@virtualdom/client";
import { connectWeb } from "@virtualdom/client/web";

import { startGatewayWith } from "./support.mjs";

let gw;
let serves = false;
before(async () => {
  gw = await startGatewayWith({ http: true });
  const probe = await fetch(`http://${gw.http}/virtualdom.v1.MemoryGateway/ReadSnapshot`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  serves = probe.status !== 404;
});
after(async () => gw?.stop());

for (const protocol of ["connect", "grpc-web"]) {
  for (const useBinaryFormat of [true, false]) {
    const name = `${protocol} ${useBinaryFormat ? "binary" : "JSON"}`;
    describe(name, () => {
      test("write, read, a typed error, a subscription", async (t) => {
        if (!serves) return t.skip("this gateway's HTTP port does not serve Connect (branch web)");
        const client = connectWeb(`http://${gw.http}`, { protocol, useBinaryFormat });
        const node = `ts/web/${name}`;
        const w = await client.write(node, [{ op: "set", path: "title", value: "Hi" }], { actor: "web" });
        assert.equal(w.version, 1n);
        assert.equal((await client.read(node)).document.title, "Hi");
        await assert.rejects(client.write(node, [{ op: "set", path: "x", value: 1 }], { expectedVersion: 5 }), (e) => {
          assert.ok(e instanceof VersionMismatch, `${e.name}: ${e.message}`);
          assert.equal(e.currentVersion, 1n);
          return true;
        });
        await client.write(node, [{ op: "splice", path: "title", index: 2, insert: "!" }]);
        const seen = [];
        for await (const ev of client.subscribe({ nodeId: node, fromVersion: 0 })) {
          if (ev.kind === "change") seen.push([Number(ev.version), ev.actor]);
          if (seen.length === 2) break;
        }
        assert.deepEqual(seen, [[1, "web"], [2, "anonymous"]]);
      });
    });
  }
}
