// A Yjs editor in Node, connected to the gateway's WebSocket port by an unchanged provider from
// npm, driven by the Python tests (tests/gateway/test_websocket.py) over stdin/stdout:
//
//   node wsclient.mjs yws <ws://host:port/yjs> <node_id> [token]   (y-websocket WebsocketProvider)
//   node wsclient.mjs hp  <ws://host:port/hocuspocus> <node_id> [token]   (@hocuspocus/provider)
//
// stdin: one JSON command a line; stdout: one JSON event a line.
//   {"op":"insert","field":"title","index":0,"text":"x"}   edit the Y.Text field (UTF-16 index)
//   {"op":"awareness","state":{...}}                       set the local awareness state
//   {"op":"state","id":N}   -> {"event":"state","id":N,"fields":{...},"state":b64,"awareness":{...}}
//   {"op":"update","id":N,"update":b64}  apply a raw update locally (bad-input tests: the
//                                        provider sends it on as it would any local change)
//   {"op":"raw","id":N,"frame":b64}      send a raw frame on the socket (bad-input tests)
//   {"op":"close"}                       destroy the provider and exit
// events: ready, synced, status, awareness, denied, authenticated, unsynced, close, remote

import * as Y from 'yjs'
import WebSocket from 'ws'
import { createInterface } from 'node:readline'

const [kind, url, nodeId, token] = process.argv.slice(2)
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
console.log = console.info = console.warn = console.error = (...args) =>
  process.stderr.write(args.map(String).join(' ') + '\n')

const doc = new Y.Doc()
const root = doc.getMap('doc')
doc.on('update', (_u, origin) => {
  if (origin !== null && origin !== undefined && origin !== 'local') emit({ event: 'remote' })
})

const fields = () => {
  const out = {}
  for (const key of [...root.keys()].sort()) {
    if (key.startsWith('\u0000')) continue
    const v = root.get(key)
    out[key] = v instanceof Y.Text ? v.toString() : (v && v.toJSON ? v.toJSON() : v)
  }
  return out
}
const b64 = (u8) => Buffer.from(u8).toString('base64')

let provider
let awareness
let socket = () => null
if (kind === 'yws') {
  const { WebsocketProvider } = await import('y-websocket')
  provider = new WebsocketProvider(url, nodeId, doc, {
    WebSocketPolyfill: WebSocket,
    params: token ? { token } : {},
    maxBackoffTime: 500,
  })
  awareness = provider.awareness
  provider.on('status', (e) => emit({ event: 'status', status: e.status }))
  provider.on('sync', (synced) => { if (synced) emit({ event: 'synced' }) })
  provider.on('connection-close', (e) => emit({ event: 'close', code: e?.code, reason: e?.reason?.toString() }))
  socket = () => provider.ws
} else if (kind === 'hp') {
  const { HocuspocusProvider, HocuspocusProviderWebsocket } = await import('@hocuspocus/provider')
  const ws = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
  provider = new HocuspocusProvider({
    websocketProvider: ws,
    name: nodeId,
    document: doc,
    token: token ?? '',
    onSynced: () => emit({ event: 'synced' }),
    onStatus: (e) => emit({ event: 'status', status: e.status }),
    onAuthenticationFailed: (e) => emit({ event: 'denied', reason: e.reason }),
    onAuthenticated: (e) => emit({ event: 'authenticated', scope: e?.scope ?? provider.authorizedScope }),
    onUnsyncedChanges: (e) => emit({ event: 'unsynced', number: e.number }),
    onClose: (e) => emit({ event: 'close', code: e.event?.code, reason: e.event?.reason?.toString() }),
    onStateless: (e) => emit({ event: 'stateless', payload: e.payload }),
  })
  provider.attach()
  awareness = provider.awareness
  socket = () => ws.webSocket
} else {
  throw new Error(`unknown kind ${kind}`)
}

awareness.on('change', () => {
  const states = {}
  for (const [client, state] of awareness.getStates()) {
    if (client !== doc.clientID) states[client] = state
  }
  emit({ event: 'awareness', states })
})

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const cmd = JSON.parse(line)
  if (cmd.op === 'insert') {
    doc.transact(() => root.get(cmd.field).insert(cmd.index, cmd.text), 'local')
  } else if (cmd.op === 'awareness') {
    awareness.setLocalState(cmd.state)
  } else if (cmd.op === 'state') {
    const aw = {}
    for (const [client, state] of awareness.getStates()) aw[client] = state
    emit({ event: 'state', id: cmd.id, fields: fields(), state: b64(Y.encodeStateAsUpdate(doc)),
      awareness: aw, unsynced: provider.unsyncedChanges ?? null })
  } else if (cmd.op === 'update') {
    Y.applyUpdate(doc, new Uint8Array(Buffer.from(cmd.update, 'base64')), 'local')
    emit({ event: 'done', id: cmd.id })
  } else if (cmd.op === 'raw') {
    socket().send(new Uint8Array(Buffer.from(cmd.frame, 'base64')))
    emit({ event: 'done', id: cmd.id })
  } else if (cmd.op === 'stateless') {
    provider.sendStateless(cmd.payload)
  } else if (cmd.op === 'close') {
    provider.destroy()
    process.exit(0)
  }
})
rl.on('close', () => { provider.destroy(); process.exit(0) })
emit({ event: 'ready', client_id: doc.clientID })
