// A Y.Doc bound to a gateway document over its y-websocket endpoint
// (ws://HOST:HTTP_PORT/yjs/<node_id>), with y-websocket's own WebsocketProvider: sync, awareness,
// reconnects. Edits are written through the document's actor like WriteDiff, so WriteDiff
// writers, change streams and other members see them once durable. The document's Yjs layout is
// the engine's: its fields are the root map `doc` (see `fields`), a string field is a Y.Text.
import { WebsocketProvider } from "y-websocket";
import type * as Y from "yjs";

import type { TokenSource } from "./client.js";
import { checkTokenTransport } from "./security.js";

export interface YjsOptions {
  /** The gateway's HTTP port as "ws://host:port" or "wss://host:port" (or "http(s)://..."). */
  url: string;
  /** The document's node id (slashes are fine: the room path is /yjs/<node_id>). */
  nodeId: string;
  /** A bearer token, sent as the `bearer.<JWT>` WebSocket subprotocol (browsers cannot set
   * headers; a subprotocol stays out of proxies' URL logs). A function is asked again before
   * each reconnect. */
  token?: TokenSource;
  /** The WebSocket class (Node 20 has none built in: pass the `ws` package's). */
  WebSocketPolyfill?: unknown;
  /** Longest wait between reconnects, ms (y-websocket's default 2500). */
  maxBackoffTime?: number;
  /** Connect at once (default true). */
  connect?: boolean;
}

/** The y-websocket WebsocketProvider of `doc` bound to a gateway document (resolves once the
 * first token is known; `whenSynced(provider)` waits for the first sync).
 *
 *   const doc = new Y.Doc();
 *   const provider = await bindYDoc(doc, { url: "ws://127.0.0.1:8080", nodeId: "notes/1", token });
 *   await whenSynced(provider);
 *   fields(doc).get("title").insert(0, "Hi ");   // a Y.Text field
 *
 * To stop: `provider.destroy()`, and `doc.destroy()` (which ends the awareness's timer). */
export async function bindYDoc(doc: Y.Doc, o: YjsOptions): Promise<WebsocketProvider> {
  const base = o.url.replace(/^http/, "ws").replace(/\/+$/, "");
  checkTokenTransport(base, o.token);
  const protocols = async (): Promise<string[]> => {
    if (o.token === undefined) return [];
    const token = typeof o.token === "string" ? o.token : await o.token();
    return [`bearer.${token}`];
  };
  const opts: ConstructorParameters<typeof WebsocketProvider>[3] = {
    connect: false,
    protocols: await protocols(),
    maxBackoffTime: o.maxBackoffTime ?? 2500,
    // The BroadcastChannel shortcut would sync tabs of one browser behind the gateway's back
    // (its grants and its durable-before-broadcast ordering): everything goes through it.
    disableBc: true,
  };
  if (o.WebSocketPolyfill !== undefined) opts.WebSocketPolyfill = o.WebSocketPolyfill as typeof WebSocket;
  const provider = new WebsocketProvider(`${base}/yjs`, o.nodeId, doc, opts);
  if (typeof o.token === "function") {
    // y-websocket reads `protocols` at each (re)connect: a closed socket gets a fresh token
    // before its backoff ends (the gateway closes with 4401 when a token expires).
    provider.on("connection-close", () => {
      void protocols().then((p) => {
        provider.protocols = p;
      });
    });
  }
  if (o.connect ?? true) provider.connect();
  return provider;
}

/** Resolves when the provider has synced with the gateway (at once if it has). */
export function whenSynced(provider: WebsocketProvider, signal?: AbortSignal): Promise<void> {
  if (provider.synced) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onSync = (synced: boolean): void => {
      if (!synced) return;
      provider.off("sync", onSync);
      resolve();
    };
    provider.on("sync", onSync);
    signal?.addEventListener("abort", () => {
      provider.off("sync", onSync);
      reject(signal.reason);
    }, { once: true });
  });
}

/** The document's fields: the root map the engine keeps them in. */
export function fields(doc: Y.Doc): Y.Map<unknown> {
  return doc.getMap("doc");
}
