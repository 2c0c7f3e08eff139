// A Yjs client standing in for a browser, driven by tests/test_yjs_interop.py.
//
//   node yclient.mjs [read|edit] < update.txt
//
// stdin holds one Yjs v1 update (the engine's Replica.encode_state()), as base64 or as hex with
// a "hex:" prefix. The script applies it to a fresh Y.Doc, reads the root map "doc" (the
// engine's CRDT layout, see engine/values.py), and with "edit" (the default) then edits it the
// way a browser client would. It prints one JSON object:
//
//   read        the fields as this client sees them before editing (meta keys left out)
//   meta        the "\0"+field meta entries it read ([order, epoch])
//   lengths     JavaScript (UTF-16) length of every Y.Text field
//   after       the fields after editing
//   update      base64 of the incremental v1 update made by the edits (Y.encodeStateAsUpdate
//               against the state vector before them)
//   state       base64 of the whole document as one v1 update
//   update_v2   base64 of the same incremental update in the v2 encoding
//   client_id   this client's Yjs clientID
//
// Values that JSON cannot carry are tagged: bigint -> {"$bigint": "<decimal>"}, Uint8Array ->
// {"$bytes": "<hex>"}, undefined -> {"$undefined": true}.

import * as Y from 'yjs'

const CLIENT_ID = 4242
const META = '\u0000'

// stdout carries exactly one JSON object: Yjs's own messages (e.g. "[yjs] Changed the
// client-id ..." when the update already holds CLIENT_ID's edits) go to stderr.
console.log = console.info = console.warn = (...args) => console.error(...args)

const readStdin = async () => {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8').trim()
}

const decodeInput = (text) => {
  if (text.startsWith('hex:')) return new Uint8Array(Buffer.from(text.slice(4), 'hex'))
  return new Uint8Array(Buffer.from(text, 'base64'))
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64')

// A JSON-safe reading of one CRDT value, leaving out engine meta keys.
const plain = (v) => {
  if (v instanceof Y.Text) return v.toString()
  if (v instanceof Y.Array) return v.toArray().map(plain)
  if (v instanceof Y.Map) {
    const out = {}
    for (const key of [...v.keys()].sort()) {
      if (!key.startsWith(META)) out[key] = plain(v.get(key))
    }
    return out
  }
  if (typeof v === 'bigint') return { $bigint: v.toString() }
  if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString('hex') }
  if (v === undefined) return { $undefined: true }
  if (Array.isArray(v)) return v.map(plain)
  if (v !== null && typeof v === 'object') {
    const out = {}
    for (const key of Object.keys(v).sort()) out[key] = plain(v[key])
    return out
  }
  return v
}

const readDoc = (root) => {
  const fields = {}
  const meta = {}
  const lengths = {}
  for (const key of [...root.keys()].sort()) {
    const v = root.get(key)
    if (key.startsWith(META)) {
      if (key.indexOf(META, 1) === -1) meta[key.slice(1)] = plain(v)
      continue
    }
    fields[key] = plain(v)
    if (v instanceof Y.Text) lengths[key] = v.length
  }
  return { fields, meta, lengths }
}

// The order key that puts a new field after every field present (the engine's next_order).
const nextOrder = (root) => {
  let max = -1
  for (const key of root.keys()) {
    if (!key.startsWith(META) || key.indexOf(META, 1) !== -1) continue
    const m = root.get(key)
    if (Array.isArray(m) && typeof m[0] === 'number' && m[0] > max) max = m[0]
  }
  return max + 1
}

// What a browser client does: every index below is a JavaScript (UTF-16) index.
const edit = (doc, root) => {
  doc.transact(() => {
    const title = root.get('title')
    // Insert right after the emoji (a surrogate pair: two UTF-16 units) and capitalise.
    const afterEmoji = title.toString().indexOf('\u{1F600}') + 2
    title.insert(afterEmoji, '!')
    title.delete(0, 1)
    title.insert(0, 'H')
    // Plain JS values into a Y.Array: a string and a number.
    root.get('tags').insert(1, ['js', 42])
    // A new string field, as a Y.Text with its meta entry [order, epoch].
    root.set('note', new Y.Text('from yjs \u{1F680}'))
    root.set(META + 'note', [nextOrder(root), ''])
    // A bigint is an int64 (docs/ARCHITECTURE.md, "CRDT layout").
    root.set('jsbig', 2n ** 40n)
    root.set(META + 'jsbig', [nextOrder(root), ''])
  })
}

const main = async () => {
  const mode = process.argv[2] ?? 'edit'
  if (mode !== 'read' && mode !== 'edit') {
    process.stderr.write(`unknown mode ${mode}; use read or edit\n`)
    process.exit(2)
  }
  const doc = new Y.Doc()
  doc.clientID = CLIENT_ID
  Y.applyUpdate(doc, decodeInput(await readStdin()))
  const root = doc.getMap('doc')
  const before = readDoc(root)
  const sv = Y.encodeStateVector(doc)
  if (mode === 'edit') edit(doc, root)
  const out = {
    client_id: doc.clientID,
    read: before.fields,
    meta: before.meta,
    lengths: before.lengths,
    after: readDoc(root).fields,
    update: b64(Y.encodeStateAsUpdate(doc, sv)),
    state: b64(Y.encodeStateAsUpdate(doc)),
    update_v2: b64(Y.encodeStateAsUpdateV2(doc, sv))
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

await main()
