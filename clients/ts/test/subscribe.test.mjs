// subscribe() across a gateway restart: a single-document and a prefix subscription resume from
// their last version / resume token with no gap and no duplicate, and a write made while the
// gateway is down is retried (same request id) until it lands, once.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { test } from "node:test";

import { connectNode } from "@virtualdom/client/node";

import { startGatewayWith } from "./support.mjs";

/** Runs `for await` over a subscription in the background; `until(pred)` waits for an event. */
function collect(sub) {
  const events = [];
  let wake = () => {};
  let failure;
  const done = (async () => {
    try {
      for await (const ev of sub) {
        events.push(ev);
        wake();
      }
    } catch (err) {
      failure = err;
    } finally {
      wake();
    }
  })();
  const until = async (pred, what) => {
    for (;;) {
      if (pred(events)) return events;
      if (failure) throw failure;
      await new Promise((r) => (wake = r));
    }
  };
  return { events, until, done };
}

const changes = (events, node) => events.filter((e) => e.kind === "change" && (!node || e.nodeId === node));
const versions = (events, node) => changes(events, node).map((e) => Number(e.version));

test("subscriptions resume across a gateway restart without gap or duplicate", async () => {
  let gw = await startGatewayWith();
  const { address, dataDir } = gw;
  try {
    const client = connectNode(address, { retry: { maxAttempts: 200, initialBackoffMs: 20, maxBackoffMs: 200 } });
    await client.write("ts/sub/a", [{ op: "set", path: "n", value: 0 }], { actor: "ts" });
    await client.write("ts/sub/b", [{ op: "set", path: "n", value: 0 }]);
    await client.write("ts/sub/a", [{ op: "inc", path: "n", by: 1 }]);

    const one = client.subscribe({ nodeId: "ts/sub/a", fromVersion: 0 });
    const all = client.subscribe({ prefix: "ts/sub/", sendSnapshot: true });
    const a = collect(one);
    const p = collect(all);
    await a.until((ev) => versions(ev).length === 2);
    assert.deepEqual(versions(a.events), [1, 2]);
    assert.equal(changes(a.events)[0].actor, "ts");
    await p.until((ev) => ev.filter((e) => e.kind === "snapshot").length === 2);
    await client.write("ts/sub/b", [{ op: "inc", path: "n", by: 1 }]);
    await p.until((ev) => versions(ev, "ts/sub/b").includes(2));

    await gw.stop({ keep: true });
    // Made while the gateway is down: retried with its request id until the gateway is back.
    const pending = client.write("ts/sub/a", [{ op: "inc", path: "n", by: 1 }]);
    gw = await startGatewayWith({ address, dataDir });
    const landed = await pending;
    assert.equal(landed.version, 3n);
    await client.write("ts/sub/a", [{ op: "inc", path: "n", by: 1 }]);
    await client.write("ts/sub/b", [{ op: "inc", path: "n", by: 1 }]);

    await a.until((ev) => versions(ev).includes(4));
    await p.until((ev) => versions(ev, "ts/sub/a").includes(4) && versions(ev, "ts/sub/b").includes(3));
    assert.deepEqual(versions(a.events), [1, 2, 3, 4], "single document: every version once, in order");
    assert.deepEqual(versions(p.events, "ts/sub/a"), [3, 4], "prefix: after the snapshot at 2, the rest once");
    assert.deepEqual(versions(p.events, "ts/sub/b"), [2, 3]);
    assert.deepEqual(p.events.filter((e) => e.kind === "snapshot").map((e) => [e.nodeId, Number(e.version)]).sort(), [
      ["ts/sub/a", 2],
      ["ts/sub/b", 1],
    ]);
    assert.ok(one.reconnects >= 1 && all.reconnects >= 1, `${one.reconnects} ${all.reconnects}`);
    assert.equal(one.lastVersion, 4n);
    assert.deepEqual(all.resumeToken, changes(p.events).at(-1).resumeToken);
    const snap = await client.read("ts/sub/a");
    assert.equal(snap.version, 4n);
    assert.equal(snap.document.n, 3, "the write retried across the restart applied once");

    // Closing ends the for await; a new subscription from the saved token has nothing to replay.
    one.close();
    all.close();
    await Promise.all([a.done, p.done]);
    const resumed = client.subscribe({ prefix: "ts/sub/", resumeToken: all.resumeToken });
    const again = collect(resumed);
    await client.write("ts/sub/b", [{ op: "inc", path: "n", by: 1 }]);
    await again.until((ev) => changes(ev).length >= 1);
    assert.deepEqual(changes(again.events).map((e) => [e.nodeId, Number(e.version)]), [["ts/sub/b", 4]]);
    resumed.close();
    await again.done;
  } finally {
    await gw.stop({ keep: true });
    rmSync(dataDir, { recursive: true, force: true });
  }
});
