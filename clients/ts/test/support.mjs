// Helpers of the Node tests: a real gateway (`virtualdom serve` from the repository's .venv on
// 127.0.0.1 port 0, its ports read from its "listening on" and "http on" log lines) and a gRPC
// client of it made with @connectrpc/connect-node and the code generated in src/gen.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ErrorDetailSchema, MemoryGateway } from "../src/gen/virtualdom/v1/gateway_pb.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const WAIT_MS = 30_000;
export const PYTHON = join(ROOT, ".venv", "bin", "python");

/** Start a gateway; resolves to {address, http, dataDir, stop()}. */
export function startGateway(...extra) {
  return startGatewayWith({ args: extra });
}

/**
 * Start a gateway with options: `args` (extra serve flags), `address` (default 127.0.0.1:0; a
 * restart passes the previous one), `dataDir` (default a new temporary folder, removed by stop()
 * unless `keep`), `http` (true: also serve the HTTP port, read from its log line).
 */
export function startGatewayWith({ args = [], address = "127.0.0.1:0", dataDir, http = false } = {}) {
  const bin = process.env.VIRTUALDOM_BIN ?? join(ROOT, ".venv", "bin", "virtualdom");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run scripts/test.sh`);
  const own = dataDir === undefined;
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), "vdom-ts-"));
  // Without the HTTP port every gateway would bind its default 127.0.0.1:8080 (and collide).
  const httpArgs = ["--http-address", http ? "127.0.0.1:0" : ""];
  const proc = spawn(bin, ["serve", "--address", address, "--data-dir", dir, ...httpArgs, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    // The HTTP port on an ephemeral port too: its default (127.0.0.1:8080) may be taken.
    env: { ...process.env, VIRTUALDOM_HTTP_ADDRESS: "127.0.0.1:0" },
  });
  let log = "";
  let started = false;
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening on" within ${WAIT_MS} ms:\n${log}`)), WAIT_MS);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const m = /listening on (\S+):(\d+) /.exec(log);
      const h = /http on (\S+):(\d+)/.exec(log);
      if (!started && m && (!http || h)) {
        clearTimeout(timer);
        started = true;
        resolvePromise({
          address: `${m[1]}:${m[2]}`,
          http: h ? `${h[1]}:${h[2]}` : undefined,
          dataDir: dir,
          log: () => log,
          stop: ({ keep = !own } = {}) =>
            new Promise((done) => {
              const finish = () => {
                if (!keep) rmSync(dir, { recursive: true, force: true });
                done();
              };
              if (proc.exitCode !== null || proc.signalCode !== null) return finish();
              proc.once("exit", finish);
              proc.kill("SIGTERM");
            }),
        });
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      if (!started) reject(new Error(`the gateway exited (${code}):\n${log}`));
    });
  });
}

/** A MemoryGateway client over gRPC (HTTP/2) to host:port. */
export function gatewayClient(address) {
  return createClient(MemoryGateway, createGrpcTransport({ baseUrl: `http://${address}` }));
}

/** "InvalidArgument" -> "INVALID_ARGUMENT" (the proto's names, as in the vectors). */
export function codeName(code) {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** The gRPC code name and ErrorDetail reason of a failed call. */
export function errorOf(err) {
  const e = ConnectError.from(err);
  const [detail] = e.findDetails(ErrorDetailSchema);
  return { code: codeName(e.code), reason: detail?.reason ?? "", message: e.rawMessage };
}

export const hex = (bytes) => Buffer.from(bytes).toString("hex");
export const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));

/** An HS256 JWT (the gateway's tokens, docs/security.md), made with node:crypto. */
export function hs256(secret, claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}
