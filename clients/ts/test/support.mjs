// Helpers of the Node tests: a real gateway (`virtualdom serve` from the repository's .venv on
// 127.0.0.1 port 0, its port read from its "listening on" log line) and a gRPC client of it
// made with @connectrpc/connect-node and the code generated in src/gen.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ErrorDetailSchema, MemoryGateway } from "../src/gen/virtualdom/v1/gateway_pb.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const WAIT_MS = 30_000;

/** Start a gateway; resolves to {address, stop()}. */
export function startGateway(...extra) {
  const bin = process.env.VIRTUALDOM_BIN ?? join(ROOT, ".venv", "bin", "virtualdom");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run scripts/test.sh`);
  const dataDir = mkdtempSync(join(tmpdir(), "vdom-ts-"));
  const proc = spawn(bin, ["serve", "--address", "127.0.0.1:0", "--data-dir", dataDir, ...extra], {
    stdio: ["ignore", "ignore", "pipe"],
    // The HTTP port on an ephemeral port too: its default (127.0.0.1:8080) may be taken.
    env: { ...process.env, VIRTUALDOM_HTTP_ADDRESS: "127.0.0.1:0" },
  });
  let log = "";
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening on" within ${WAIT_MS} ms:\n${log}`)), WAIT_MS);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const m = /listening on (\S+):(\d+) /.exec(log);
      if (m) {
        clearTimeout(timer);
        resolvePromise({
          address: `${m[1]}:${m[2]}`,
          stop: () =>
            new Promise((done) => {
              proc.once("exit", () => {
                rmSync(dataDir, { recursive: true, force: true });
                done();
              });
              proc.kill("SIGTERM");
            }),
        });
      }
    });
    proc.once("exit", (code) => reject(new Error(`the gateway exited (${code}):\n${log}`)));
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
