// Node: the gateway's native gRPC (HTTP/2) port, through @connectrpc/connect-node.
import type { Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, type GrpcTransportOptions } from "@connectrpc/connect-node";

import { type ClientOptions, GatewayClient } from "./client.js";
import { checkTokenTransport } from "./security.js";

export interface NodeOptions extends ClientOptions {
  /** TLS: "https://" is used for the address; `nodeOptions` (e.g. {ca}) go to http2.connect. */
  tls?: boolean;
  nodeOptions?: GrpcTransportOptions["nodeOptions"];
  /** connect interceptors (logging, metrics...). */
  interceptors?: Interceptor[];
  /** Largest message sent or received, bytes (default 128 MiB: the gateway takes 100 MB documents). */
  maxMessageBytes?: number;
  /** Ping the connection every this many ms (default 20 s; the gateway refuses more often than 5 s). */
  pingIntervalMs?: number;
}

/** A GatewayClient over gRPC to `address` ("host:port", or a full "http(s)://host:port" URL).
 * A token needs TLS, except to a loopback address. */
export function connectNode(address: string, options: NodeOptions = {}): GatewayClient {
  const baseUrl = /^https?:\/\//.test(address) ? address : `${options.tls ? "https" : "http"}://${address}`;
  checkTokenTransport(baseUrl, options.token);
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: options.interceptors ?? [],
    nodeOptions: options.nodeOptions,
    readMaxBytes: options.maxMessageBytes ?? 128 * 1024 * 1024,
    writeMaxBytes: options.maxMessageBytes ?? 128 * 1024 * 1024,
    pingIntervalMs: options.pingIntervalMs ?? 20_000,
  });
  return new GatewayClient(transport, options);
}
