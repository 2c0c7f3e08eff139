// The editor page: one text field of a gateway document in CodeMirror 6, bound to the
// document's Y.Text by y-codemirror.next over the gateway's y-websocket endpoint
// (ws://HOST:HTTP_PORT/yjs/<node_id>), with remote cursors and names, the members present, and
// the document's version and live change feed beside it.
//
// Each of the gateway's browser transports is used for what it suits: REST to list documents
// and look one up, Connect (@connectrpc/connect-web) to create the field (WriteDiff) and for the
// change feed (SubscribeChanges, server streaming, resumed from its last token after a drop),
// gRPC-Web for the snapshot panel (ReadSnapshot).
//
// URL parameters (query or #hash): node, field, name open a document at once; token is a JWT
// sent as "Authorization: Bearer" to REST, Connect and gRPC-Web, and as y-websocket's ?token=.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { EditorView, basicSetup } from 'codemirror'
import { yCollab } from 'y-codemirror.next'
import { createClient } from '@connectrpc/connect'
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-web'
import { BSON, EJSON } from 'bson'
import { MemoryGateway } from '../../clients/ts/src/gen/virtualdom/v1/gateway_pb.js'

const $ = (id) => document.getElementById(id)
const params = new URLSearchParams(location.search)
for (const [k, v] of new URLSearchParams(location.hash.slice(1))) params.set(k, v)
const token = params.get('token') || ''

// Member colours: y-codemirror.next draws a remote caret in `color`, its selection in
// `colorLight`.
const COLORS = ['#d1495b', '#2e86ab', '#3b8b3a', '#8e44ad', '#e67e22', '#16a085', '#c0392b']
const pick = (s) => [...s].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) % COLORS.length

function status (text, state = 'idle') {
  const el = $('status')
  el.textContent = text
  el.dataset.state = state
}

/** A REST call; throws the gateway's {code, message, reason} error as an Error. */
async function api (method, path, body, headers = {}) {
  const h = { ...headers }
  if (token) h.Authorization = `Bearer ${token}`
  if (body !== undefined) h['Content-Type'] = 'application/json'
  const r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) })
  const data = r.status === 304 ? null : await r.json()
  if (!r.ok && r.status !== 304) {
    const err = new Error(`${data.message} (${data.reason})`)
    err.status = r.status
    err.reason = data.reason
    throw err
  }
  return data
}

const docUrl = (nodeId) => `/v1/docs/${encodeURIComponent(nodeId)}`
const utf8 = new TextEncoder()
const auth = (next) => async (req) => {
  if (token) req.header.set('Authorization', `Bearer ${token}`)
  return next(req)
}
// Connect with JSON (readable in the browser's network panel), gRPC-Web with binary protobuf.
const rpc = {
  connect: createClient(MemoryGateway, createConnectTransport({ baseUrl: location.origin, interceptors: [auth] })),
  'grpc-web': createClient(MemoryGateway, createGrpcWebTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [auth] }))
}
/** WriteDiff over one protocol: {version, clock}. */
async function rpcWrite (protocol, nodeId, ops) {
  const r = await rpc[protocol].writeDiff({ nodeId: utf8.encode(nodeId), diffBson: BSON.serialize({ ops }) })
  return { version: Number(r.newVersion), replayed: r.replayed }
}
/** ReadSnapshot over one protocol: {version, document} (the document as relaxed EJSON). */
async function rpcRead (protocol, nodeId) {
  const r = await rpc[protocol].readSnapshot({ nodeId: utf8.encode(nodeId) })
  const document = EJSON.serialize(BSON.deserialize(r.snapshotBson), { relaxed: true })
  return { version: Number(r.version), document }
}

async function listDocuments () {
  try {
    const { node_ids: ids } = await api('GET', '/v1/docs?limit=200')
    $('nodes').replaceChildren(...ids.map((id) => Object.assign(document.createElement('option'), { value: id })))
  } catch (e) {
    // Listing is a convenience: a token without list rights still opens named documents.
  }
}

/** The document exists and its field is a string (created empty when missing). */
async function ensureField (nodeId, field) {
  let doc
  try {
    doc = (await api('GET', docUrl(nodeId))).document
  } catch (e) {
    if (e.status !== 404) throw e
    doc = null
  }
  if (doc === null || !(field in doc)) {
    await rpcWrite('connect', nodeId, [{ op: 'set', path: [field], value: '' }])
  } else if (typeof doc[field] !== 'string') {
    throw new Error(`the field ${JSON.stringify(field)} holds a ${typeof doc[field]}, not text`)
  }
}

let session = null

function close () {
  if (!session) return
  session.view.destroy()
  session.provider.destroy()
  session.ydoc.destroy()
  session.abort.abort()
  session = null
}

function showChange (s, c) {
  s.version = Number(c.version)
  let ops = 'update'
  try {
    const diff = BSON.deserialize(c.diffBson)
    if (Array.isArray(diff.ops)) ops = diff.ops.map((o) => `${o.op} ${[].concat(o.path ?? []).join('.')}`).join(', ')
  } catch (e) {
    ops = '(diff not shown)'
  }
  const li = document.createElement('li')
  li.innerHTML = '<span class="v"></span> <span class="a"></span> <span class="o"></span>'
  li.querySelector('.v').textContent = `v${s.version}`
  li.querySelector('.a').textContent = c.actor
  li.querySelector('.o').textContent = ops
  li.title = new Date(Number(c.timestampUs / 1000n)).toISOString()
  $('changes').prepend(li)
  while ($('changes').children.length > 200) $('changes').lastChild.remove()
  $('version').textContent = String(s.version)
}

/** The live change feed over Connect (server streaming): every committed change from version 0,
 * then live; after a dropped connection it resumes from the last resume token it got. */
async function follow (s) {
  let resume = null
  let delay = 250
  while (session === s) {
    // (protobuf-es spells a oneof as {case, value})
    const start = resume ? { case: 'resumeToken', value: resume } : { case: 'fromVersion', value: 0n }
    try {
      const request = { target: { case: 'nodeId', value: utf8.encode(s.nodeId) }, start }
      const stream = rpc.connect.subscribeChanges(request, { signal: s.abort.signal })
      for await (const event of stream) {
        delay = 250
        $('feed').textContent = 'live, over Connect'
        for (const c of event.changes) {
          showChange(s, c)
          resume = c.resumeToken
        }
        if (event.progress) resume = event.progress.resumeToken
      }
    } catch (e) {
      if (session !== s) return
      $('feed').textContent = `feed: ${e.message}; retrying`
    }
    await new Promise((resolve) => setTimeout(resolve, delay))
    delay = Math.min(delay * 2, 5000)
  }
}

async function showSnapshot (s) {
  const { version, document } = await rpcRead('grpc-web', s.nodeId)
  $('snapshot').textContent = `v${version} ${JSON.stringify(document, null, 1)}`
}

function showMembers (awareness) {
  const items = []
  for (const [clientId, state] of awareness.getStates()) {
    if (!state.user) continue
    const li = document.createElement('li')
    const dot = Object.assign(document.createElement('span'), { className: 'dot' })
    dot.style.background = state.user.color
    li.append(dot, document.createTextNode(state.user.name + (clientId === awareness.clientID ? ' (you)' : '')))
    li.dataset.name = state.user.name
    items.push(li)
  }
  $('members').replaceChildren(...items)
}

async function open (nodeId, field, name) {
  close()
  status(`opening ${nodeId}…`)
  $('doc-id').textContent = nodeId
  $('changes').replaceChildren()
  $('version').textContent = '–'
  await ensureField(nodeId, field)
  const ydoc = new Y.Doc()
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const provider = new WebsocketProvider(`${scheme}://${location.host}/yjs`, encodeURIComponent(nodeId), ydoc, {
    params: token ? { token } : {}
  })
  const color = COLORS[pick(name)]
  provider.awareness.setLocalStateField('user', { name, color, colorLight: color + '33' })
  const s = { nodeId, field, ydoc, provider, view: null, version: 0, abort: new AbortController() }
  session = s
  provider.on('status', ({ status: st }) => {
    if (session === s && st !== 'connected') status(`${st}…`)
  })
  provider.on('connection-close', (ev) => {
    if (session === s && ev && ev.code >= 4000) status(`refused: ${ev.reason || ev.code}`, 'error')
  })
  provider.awareness.on('change', () => session === s && showMembers(provider.awareness))
  await new Promise((resolve) => provider.once('sync', resolve))
  if (session !== s) return
  const ytext = ydoc.getMap('doc').get(field)
  if (!(ytext instanceof Y.Text)) throw new Error(`the field ${JSON.stringify(field)} is not text`)
  const undoManager = new Y.UndoManager(ytext)
  s.view = new EditorView({
    doc: ytext.toString(),
    extensions: [basicSetup, EditorView.lineWrapping, yCollab(ytext, provider.awareness, { undoManager })],
    parent: $('editor')
  })
  showMembers(provider.awareness)
  follow(s)
  status(`editing ${field} of ${nodeId}`, 'synced')
  history.replaceState(null, '', `#${new URLSearchParams({ node: nodeId, field, name })}`)
  // For tests and the console: the bound text and the provider.
  window.vdomEditor = {
    ydoc, ytext, provider, view: s.view, text: () => ytext.toString(), version: () => s.version,
    read: (protocol) => rpcRead(protocol, nodeId), write: (protocol, ops) => rpcWrite(protocol, nodeId, ops)
  }
}

$('name').value = params.get('name') || `guest-${Math.random().toString(36).slice(2, 6)}`
$('field').value = params.get('field') || 'text'
$('node').value = params.get('node') || ''
$('read-snapshot').addEventListener('click', () => {
  if (session) showSnapshot(session).catch((e) => { $('snapshot').textContent = e.message })
})
$('open').addEventListener('submit', (ev) => {
  ev.preventDefault()
  open($('node').value.trim(), $('field').value.trim(), $('name').value.trim())
    .catch((e) => status(e.message, 'error'))
})
listDocuments()
if (params.get('node')) $('open').requestSubmit()
