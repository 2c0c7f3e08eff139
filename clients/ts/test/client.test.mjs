// The wrapper (@virtualdom/client, built into dist/ by `npm test`'s pretest) against a real
// gateway: write/read round trip, typed errors, retries (what is retried, what never is, a rate
// limit's retry-after honoured), the token option.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Decimal128, Int32, ObjectId } from "bson";

import {
  GatewayClient,
  InvalidArgument,
  LimitExceeded,
  NotFound,
  PermissionDenied,
  RateLimited,
  ResourceExhausted,
  RetryPolicy,
  Unauthenticated,
  VersionMismatch,
} from "@virtualdom/client";
import { connectNode } from "@virtualdom/client/node";
import { connectWeb } from "@virtualdom/client/web";
import { bindYDoc } from "@virtualdom/client/yjs";

import { hs256, startGatewayWith } from "./support.mjs";

/** An interceptor counting the requests that reach the transport (one per attempt). */
function counter() {
  const calls = [];
  return { calls, interceptor: (next) => (req) => (calls.push(req.method.name), next(req)) };
}

describe("an open gateway", () => {
  let gw;
  let client;
  before(async () => {
    gw = await startGatewayWith({ args: ["--max-message-bytes", "65536"] });
    client = connectNode(gw.address);
  });
  after(async () => gw?.stop());

  test("write then read round-trips the document and its BSON types", async () => {
    const oid = new ObjectId();
    const w = await client.write("ts/round", [
      { op: "set", path: "title", value: "Hi" },
      { op: "set", path: "n", value: 5n }, // int64
      { op: "set", path: "meta", value: { id: oid, price: Decimal128.fromString("1.10"), small: new Int32(3) } },
    ], { actor: "alice", metadata: { why: "test" } });
    assert.equal(w.version, 1n);
    assert.equal(w.replayed, false);
    assert.ok(w.requestId.length > 0, "retries on: a request id is generated");
    assert.ok(Object.values(w.clock).every((n) => typeof n === "bigint"));
    const s = await client.read("ts/round");
    assert.equal(s.version, 1n);
    assert.equal(s.document.title, "Hi");
    assert.equal(s.document.n, 5n);
    assert.equal(typeof s.document.meta.small, "number");
    assert.ok(s.document.meta.id.equals(oid));
    assert.equal(s.document.meta.price.toString(), "1.10");
    const w2 = await client.write("ts/round", [{ op: "splice", path: "title", index: 2, insert: " there" }]);
    assert.equal(w2.version, 2n);
    assert.equal((await client.read("ts/round", { path: "title" })).value, "Hi there");
    assert.equal((await client.read("ts/round", { path: ["meta", "small"] })).value, 3);
    assert.equal((await client.read("ts/round", { version: 1 })).document.title, "Hi");
    const raw = await client.readRaw("ts/round");
    assert.ok(raw instanceof Uint8Array && raw.length > 0);
  });

  test("a request id sent twice lands once: the second is replayed", async () => {
    const ops = [{ op: "set", path: "n", value: 1 }];
    const a = await client.write("ts/replay", ops, { requestId: "once-1" });
    const b = await client.write("ts/replay", ops, { requestId: "once-1" });
    assert.equal(a.version, 1n);
    assert.equal(b.version, 1n);
    assert.equal(b.replayed, true);
    assert.equal((await client.read("ts/replay")).document.n, 1);
  });

  test("typed errors carry code, reason and detail; what cannot succeed is tried once", async () => {
    const { calls, interceptor } = counter();
    const c = connectNode(gw.address, { interceptors: [interceptor] });
    await c.write("ts/errors", [{ op: "set", path: "a", value: 1 }]);

    await assert.rejects(c.read("ts/missing"), (e) => e instanceof NotFound && e.codeName === "NOT_FOUND");

    calls.length = 0;
    await assert.rejects(c.write("ts/errors", [{ op: "nope", path: "a" }]), (e) => {
      assert.ok(e instanceof InvalidArgument, e.name);
      assert.equal(e.codeName, "INVALID_ARGUMENT");
      assert.match(e.rawMessage, /nope/);
      return true;
    });
    assert.deepEqual(calls, ["WriteDiff"], "INVALID_ARGUMENT is never retried");

    calls.length = 0;
    await assert.rejects(c.write("ts/errors", [{ op: "set", path: "a", value: 2 }], { expectedVersion: 7 }), (e) => {
      assert.ok(e instanceof VersionMismatch, e.name);
      assert.equal(e.reason, "VERSION_MISMATCH");
      assert.equal(e.currentVersion, 1n);
      return true;
    });
    assert.equal(calls.length, 1);

    // Over the gateway's message limit: RESOURCE_EXHAUSTED without a retryable reason.
    calls.length = 0;
    await assert.rejects(c.write("ts/errors", [{ op: "set", path: "big", value: "x".repeat(100_000) }]), (e) => {
      assert.ok(e instanceof ResourceExhausted || e instanceof LimitExceeded, `${e.name}: ${e.message}`);
      return true;
    });
    assert.equal(calls.length, 1, "a size limit is not retried");
    assert.equal((await c.read("ts/errors")).version, 1n, "nothing applied");
  });
});

describe("a rate-limited gateway", () => {
  let gw;
  before(async () => {
    gw = await startGatewayWith({ args: ["--rate-writes", "0.5", "--rate-writes-burst", "1"] });
  });
  after(async () => gw?.stop());

  test("RATE_LIMITED is retried after the gateway's retry_after_ms; without retries it surfaces", async () => {
    const strict = connectNode(gw.address, { retry: RetryPolicy.disabled() });
    await strict.write("ts/rate", [{ op: "set", path: "n", value: 1 }]);
    const refused = await strict.write("ts/rate", [{ op: "inc", path: "n", by: 1 }]).then(
      () => assert.fail("the second write within the burst should be refused"),
      (e) => e,
    );
    assert.ok(refused instanceof RateLimited, refused.name);
    assert.ok(refused.retryAfterMs > 0, "the refusal says when to come back");

    const retries = [];
    const patient = connectNode(gw.address, {
      retry: { maxAttempts: 10, initialBackoffMs: 1 },
      onRetry: (r) => retries.push(r),
    });
    const w = await patient.write("ts/rate", [{ op: "inc", path: "n", by: 1 }]);
    for (const r of retries) {
      assert.ok(r.error instanceof RateLimited, r.error.name);
      assert.ok(r.delayMs >= r.error.retryAfterMs, `waited ${r.delayMs} ms, told ${r.error.retryAfterMs}`);
    }
    assert.ok(retries.length >= 1, "the bucket was still empty: the write was retried");
    assert.equal(w.version, 2n, "it landed once");
    assert.equal((await patient.read("ts/rate")).document.n, 2);
  });
});

describe("a gateway with authentication", () => {
  const secret = "an-hs256-secret-of-at-least-32-bytes!";
  let gw;
  before(async (t) => {
    const file = join(process.env.TMPDIR ?? "/tmp", `vdom-ts-secret-${process.pid}`);
    writeFileSync(file, secret);
    gw = await startGatewayWith({ args: ["--auth-hs256-secret-file", file] });
  });
  after(async () => gw?.stop());
  const token = (sub, vdom, exp = Math.floor(Date.now() / 1000) + 600) => hs256(secret, { sub, exp, vdom });

  test("the token option: a function asked for every call; no token, a bad one, no grant", async () => {
    let asked = 0;
    const alice = connectNode(gw.address, {
      token: async () => (asked++, token("alice", { read: ["ts/"], write: ["ts/a/"] })),
    });
    const w = await alice.write("ts/a/1", [{ op: "set", path: "x", value: 1 }]);
    assert.equal(w.version, 1n);
    assert.equal((await alice.read("ts/a/1")).document.x, 1);
    assert.equal(asked, 2);

    const { calls, interceptor } = counter();
    const anonymous = connectNode(gw.address, { interceptors: [interceptor] });
    await assert.rejects(anonymous.read("ts/a/1"), (e) => e instanceof Unauthenticated && e.codeName === "UNAUTHENTICATED");
    const forged = connectNode(gw.address, { token: hs256("another-secret-of-at-least-32-bytes!!", { sub: "eve", exp: 2e9 }) });
    await assert.rejects(forged.read("ts/a/1"), Unauthenticated);

    const reader = connectNode(gw.address, { token: token("bob", { read: ["ts/"] }), interceptors: [interceptor] });
    calls.length = 0;
    await assert.rejects(reader.write("ts/a/1", [{ op: "set", path: "x", value: 2 }]), (e) => {
      assert.ok(e instanceof PermissionDenied, e.name);
      assert.equal(e.codeName, "PERMISSION_DENIED");
      return true;
    });
    assert.deepEqual(calls, ["WriteDiff"], "PERMISSION_DENIED is never retried");
    assert.equal((await reader.read("ts/a/1")).version, 1n, "nothing applied");
    assert.ok(alice instanceof GatewayClient);
  });
});

test("a token is never sent in the clear to another machine", async () => {
  const token = "a.b.c";
  assert.throws(() => connectNode("10.1.2.3:50051", { token }), /TLS only/);
  assert.throws(() => connectWeb("http://gateway.example:8080", { token }), /TLS only/);
  await assert.rejects(bindYDoc(null, { url: "ws://gateway.example:8080", nodeId: "n", token }), /TLS only/);
  assert.ok(connectNode("gateway.example:443", { token, tls: true }) instanceof GatewayClient);
  assert.ok(connectWeb("https://gateway.example", { token }) instanceof GatewayClient);
  assert.ok(connectNode("127.0.0.1:1", { token }) instanceof GatewayClient);
  assert.ok(connectNode("localhost:1", { token }) instanceof GatewayClient);
  assert.ok(connectNode("10.1.2.3:50051") instanceof GatewayClient, "no token, no objection");
});
