// The generated code (src/gen: JavaScript + .d.ts from protoc-gen-es, by scripts/gen_proto.py)
// is not compiled by tsc: it is copied beside the compiled wrapper, which imports it as ./gen/.
import { cpSync, rmSync } from "node:fs";

rmSync("dist/gen", { recursive: true, force: true });
cpSync("src/gen", "dist/gen", { recursive: true });
