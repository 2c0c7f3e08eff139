// Browsers: the Connect protocol (default) or gRPC-Web on the gateway's HTTP port, through
// @connectrpc/connect-web (fetch), no proxy in between.
import type { Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import { type ClientOptions, GatewayClient } from "./client.js";
import { checkTokenTransport } from "./security.js";

export interface WebOptions extends ClientOptions {
  /** "connect" (default) or "grpc-web". */
  protocol?: "connect" | "grpc-web";
  /** Binary protobuf (default) or JSON bodies. */
  useBinaryFormat?: boolean;
  interceptors?: Interceptor[];
}

/** A GatewayClient over Connect or gRPC-Web to `baseUrl`, e.g. "http://127.0.0.1:8080". */
export function connectWeb(baseUrl: string, options: WebOptions = {}): GatewayClient {
  checkTokenTransport(baseUrl, options.token);
  const common = {
    baseUrl,
    useBinaryFormat: options.useBinaryFormat ?? true,
    interceptors: options.interceptors ?? [],
  };
  const transport = options.protocol === "grpc-web" ? createGrpcWebTransport(common) : createConnectTransport(common);
  return new GatewayClient(transport, options);
}
