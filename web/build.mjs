// Builds the editor page into the Python package (server/http/static/), which the gateway
// serves at / without Node at run time. Run by `python scripts/build_web.py` (npm ci first).
//
//   node build.mjs [OUT_DIR]        (default ../server/http/static)
//
// Writes index.html, assets/editor.js (one ES module: yjs, y-websocket, CodeMirror 6,
// y-codemirror.next), assets/editor.css and BUILD.json: the SHA-256 of the sources this build
// came from and of each file it wrote, which tests/test_web_assets.py checks against the
// sources in the repository (so a source change without a rebuild fails the tests).
import { build } from 'esbuild'
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, readdirSync, writeFileSync, copyFileSync, rmSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = process.argv[2] || join(here, '..', 'server', 'http', 'static')
const sha = (buf) => createHash('sha256').update(buf).digest('hex')

// The sources: the same list and digest as scripts/build_web.py's source_digest().
// The generated protobuf code of the gateway's API, shared with the TypeScript client.
const GEN = '../clients/ts/src/gen/virtualdom/v1/gateway_pb.js'
function sources () {
  const files = ['build.mjs', 'package.json', 'package-lock.json', GEN]
  for (const f of readdirSync(join(here, 'src')).sort()) files.push(`src/${f}`)
  return files.sort()
}
function sourceDigest () {
  const h = createHash('sha256')
  for (const f of sources()) {
    h.update(f + '\0')
    h.update(readFileSync(join(here, f)))
    h.update('\0')
  }
  return h.digest('hex')
}

rmSync(out, { recursive: true, force: true })
mkdirSync(join(out, 'assets'), { recursive: true })
await build({
  entryPoints: [join(here, 'src', 'main.js')],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  minify: true,
  legalComments: 'eof', // the bundled libraries' licence notices stay in the file
  // The generated code (outside web/) imports @bufbuild/protobuf: always web/'s copy, so the
  // bundle holds one runtime whatever else is installed beside the generated files.
  plugins: [{
    name: 'one-protobuf-runtime',
    setup (b) {
      b.onResolve({ filter: /^@bufbuild\/protobuf(\/|$)/ }, (args) =>
        (args.resolveDir === here || args.resolveDir.startsWith(here + '/')) ? undefined : b.resolve(args.path, { kind: args.kind, resolveDir: here }))
    }
  }],
  outfile: join(out, 'assets', 'editor.js'),
  logLevel: 'warning'
})
copyFileSync(join(here, 'src', 'index.html'), join(out, 'index.html'))
copyFileSync(join(here, 'src', 'editor.css'), join(out, 'assets', 'editor.css'))

const files = {}
for (const f of ['index.html', 'assets/editor.js', 'assets/editor.css']) files[f] = sha(readFileSync(join(out, f)))
const manifest = { sources: sourceDigest(), files }
writeFileSync(join(out, 'BUILD.json'), JSON.stringify(manifest, null, 2) + '\n')
console.log(`built ${relative(process.cwd(), out)} (${Object.keys(files).length} files)`)
