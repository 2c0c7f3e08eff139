// The README's TypeScript quick start (the ```ts ts-quickstart block): compiled with this
// package's tsc --strict against the built package (imported by its own name), run against a
// real gateway, its output checked line by line.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";

import { ROOT, startGatewayWith } from "./support.mjs";

const run = promisify(execFile);
const PKG = join(ROOT, "clients", "ts");

let gw;
let dir;
before(async () => {
  gw = await startGatewayWith();
  // Inside the package, so `@virtualdom/client` resolves to it (a package imports itself by name).
  dir = mkdtempSync(join(PKG, "test", ".quickstart-"));
});
after(async () => {
  await gw?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the README's TypeScript quick start compiles strict and prints what its comments say", async () => {
  const m = /```ts ts-quickstart\n(.*?)```/s.exec(readFileSync(join(ROOT, "README.md"), "utf8"));
  assert.ok(m, "no ```ts ts-quickstart block in README.md");
  writeFileSync(join(dir, "quickstart.ts"), m[1]);
  const tsc = join(PKG, "node_modules", ".bin", "tsc");
  const flags = ["--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext", "--types", "node", "--skipLibCheck"];
  await run(tsc, [...flags, "--rootDir", dir, "--outDir", dir, join(dir, "quickstart.ts")], { cwd: PKG }).catch((e) => {
    throw new Error(`tsc refused the quick start:\n${e.stdout}${e.stderr}`);
  });
  const { stdout } = await run(process.execPath, [join(dir, "quickstart.js")], {
    env: { ...process.env, VIRTUALDOM_ADDR: gw.address },
  });
  assert.deepEqual(stdout.trim().split("\n"), ["1n 2n Hi there", "VERSION_MISMATCH 2n", "1n tsdev", "2n anonymous"]);
});
