// The Yjs helper (bindYDoc: y-websocket's provider on the gateway's /yjs/<node_id>) converging
// with the Python client (virtualdom.client, test/pyclient.py) on one document, including edits
// made at the same moment on both sides; and its token, sent as the bearer subprotocol.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";

import WebSocket from "ws";
import * as Y from "yjs";

import { bindYDoc, fields, whenSynced } from "@virtualdom/client/yjs";

import { PYTHON, hs256, startGatewayWith } from "./support.mjs";

const run = promisify(execFile);
const HERE = new URL(".", import.meta.url).pathname;

async function py(address, ...args) {
  const { stdout } = await run(PYTHON, [join(HERE, "pyclient.py"), address, ...args]);
  return JSON.parse(stdout);
}

/** Resolves once `pred()` holds, re-checked after each update of `doc`. */
function until(doc, pred) {
  return new Promise((resolve) => {
    if (pred()) return resolve();
    const check = () => {
      if (!pred()) return;
      doc.off("update", check);
      resolve();
    };
    doc.on("update", check);
  });
}

describe("the Yjs helper", () => {
  let gw;
  before(async () => {
    gw = await startGatewayWith({ http: true });
  });
  after(async () => gw?.stop());

  test("a Y.Doc bound with bindYDoc and a Python client converge on one document", async () => {
    const node = "ts/yjs/1";
    await py(gw.address, "write", node, JSON.stringify([{ op: "set", path: "title", value: "Hello" }]));
    const doc = new Y.Doc();
    const provider = await bindYDoc(doc, { url: `ws://${gw.http}`, nodeId: node, WebSocketPolyfill: WebSocket });
    try {
      await whenSynced(provider);
      const title = fields(doc).get("title");
      assert.ok(title instanceof Y.Text, "a string field is a Y.Text");
      assert.equal(title.toString(), "Hello");

      title.insert(5, " world");
      const seen = await py(gw.address, "wait", node, "title", JSON.stringify("Hello world"));
      assert.equal(seen.document.title, "Hello world");

      // Both at once: the Python client prepends while the Y.Doc appends.
      const python = py(gw.address, "write", node, JSON.stringify([{ op: "splice", path: "title", index: 0, insert: "> " }]));
      title.insert(title.length, "!");
      await python;
      await until(doc, () => title.toString() === "> Hello world!");
      const final = await py(gw.address, "wait", node, "title", JSON.stringify("> Hello world!"));
      assert.equal(final.document.title, title.toString());
    } finally {
      provider.destroy();
      doc.destroy(); // its Awareness's timer ends with it
    }
  });
});

describe("the Yjs helper with authentication", () => {
  const secret = "an-hs256-secret-of-at-least-32-bytes!";
  let gw;
  before(async () => {
    const file = join(process.env.TMPDIR ?? "/tmp", `vdom-ts-yjs-secret-${process.pid}`);
    writeFileSync(file, secret);
    gw = await startGatewayWith({ http: true, args: ["--auth-hs256-secret-file", file] });
  });
  after(async () => gw?.stop());

  test("the token goes as the bearer subprotocol; without one the gateway closes with 4401", async () => {
    const token = hs256(secret, { sub: "ts", exp: Math.floor(Date.now() / 1000) + 600, vdom: { read: [""], write: [""] } });
    const doc = new Y.Doc();
    let asked = 0;
    const provider = await bindYDoc(doc, {
      url: `http://${gw.http}`,
      nodeId: "ts/yjs/auth",
      token: () => (asked++, token),
      WebSocketPolyfill: WebSocket,
    });
    const bareDoc = new Y.Doc();
    const bare = await bindYDoc(bareDoc, { url: `ws://${gw.http}`, nodeId: "ts/yjs/auth", WebSocketPolyfill: WebSocket });
    try {
      const closed = new Promise((resolve) => bare.once("connection-close", (e) => resolve(e?.code)));
      await whenSynced(provider);
      assert.equal(asked, 1);
      assert.equal(provider.ws?.protocol, `bearer.${token}`, "the gateway accepted the subprotocol");
      assert.equal(await closed, 4401);
      assert.equal(bare.synced, false);
    } finally {
      provider.destroy();
      bare.destroy();
      doc.destroy();
      bareDoc.destroy();
    }
  });
});
