// Two browser pages edit one document of a running gateway through the editor page, driven by
// tests/gateway/test_editor_page.py:
//
//   node e2e/two_pages.mjs <page url> <node_id> <screenshot.png>
//
// Both pages (separate browser contexts: nothing is shared but the gateway) open the document,
// type into it at the same moment, and must converge; each must show the other's caret with its
// name and list it among the members present. Prints one JSON line: the converged text, the
// version the pages show. Debian's chromium, driven by playwright-core (no browser download).
import { chromium } from 'playwright-core'

const [url, nodeId, shot] = process.argv.slice(2)
const STEP = 20_000
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Without the background-networking flags Chromium keeps dialling Google's hosts, which this
  // machine's closed network refuses.
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync']
  // (launch() gives every run a fresh, empty profile of its own: no --user-data-dir needed.)
})
const fail = (msg) => { throw new Error(msg) }
try {
  const open = async (name) => {
    const context = await browser.newContext({ viewport: { width: 900, height: 640 } })
    const page = await context.newPage()
    page.on('pageerror', (e) => process.stderr.write(`[${name}] page error: ${e.message}\n`))
    page.on('console', (m) => m.type() === 'error' && process.stderr.write(`[${name}] ${m.text()}\n`))
    const q = new URLSearchParams({ node: nodeId, field: 'text', name })
    await page.goto(`${url}#${q}`)
    await page.waitForSelector('#status[data-state="synced"]', { timeout: STEP })
    return page
  }
  // One after the other: the first creates the document, the second finds it.
  const alice = await open('Alice')
  const bob = await open('Bob')
  await Promise.all([alice.click('.cm-content'), bob.click('.cm-content')])
  const a = 'Alice types here. '
  const b = 'Bob writes too! '
  // Both type at the same moment, key by key.
  await Promise.all([alice.keyboard.type(a, { delay: 15 }), bob.keyboard.type(b, { delay: 15 })])
  const both = a.length + b.length
  const converged = (n) => window.vdomEditor && window.vdomEditor.text().length === n
  await Promise.all([alice, bob].map((p) => p.waitForFunction(converged, both, { timeout: STEP })))
  const [ta, tb] = await Promise.all([alice, bob].map((p) => p.evaluate(() => window.vdomEditor.text())))
  if (ta !== tb) fail(`the pages diverged: ${JSON.stringify(ta)} vs ${JSON.stringify(tb)}`)
  if ([...ta].sort().join('') !== [...a + b].sort().join('')) fail(`lost keystrokes: ${JSON.stringify(ta)}`)
  // What the editors show is the shared text.
  const shown = await alice.evaluate(() => window.vdomEditor.view.state.doc.toString())
  if (shown !== ta) fail(`the editor shows ${JSON.stringify(shown)}, the Y.Text holds ${JSON.stringify(ta)}`)
  // Each sees the other's caret, named, and lists it as present.
  for (const [page, other] of [[alice, 'Bob'], [bob, 'Alice']]) {
    await page.waitForSelector(`.cm-ySelectionInfo:text-is("${other}")`, { timeout: STEP })
    await page.waitForSelector(`#members li[data-name="${other}"]`, { timeout: STEP })
  }
  // Connect-Web and gRPC-Web calls from the page read what was typed ...
  for (const protocol of ['connect', 'grpc-web']) {
    const snap = await alice.evaluate((p) => window.vdomEditor.read(p), protocol)
    if (snap.document.text !== ta) fail(`${protocol} read ${JSON.stringify(snap)}, the pages hold ${JSON.stringify(ta)}`)
  }
  // ... and write: a field set over each protocol, read back by the other.
  const w1 = await bob.evaluate(() => window.vdomEditor.write('grpc-web', [{ op: 'set', path: 'by', value: 'grpc-web' }]))
  const w2 = await bob.evaluate(() => window.vdomEditor.write('connect', [{ op: 'set', path: 'also', value: 'connect' }]))
  if (!(w2.version === w1.version + 1)) fail(`versions ${JSON.stringify([w1, w2])}`)
  const after = await alice.evaluate(() => window.vdomEditor.read('grpc-web'))
  if (after.document.by !== 'grpc-web' || after.document.also !== 'connect' || after.version !== w2.version) {
    fail(`read after the RPC writes: ${JSON.stringify(after)}`)
  }
  // The live change feed (Connect server streaming) shows every version up to the last write.
  await Promise.all([alice, bob].map((p) =>
    p.waitForFunction((v) => window.vdomEditor.version() === v && Number(document.getElementById('version').textContent) === v,
      w2.version, { timeout: STEP }).catch(async (e) => {
      const seen = await p.evaluate(() => [window.vdomEditor.version(), document.getElementById('feed').textContent])
      fail(`the change feed shows ${JSON.stringify(seen)}, not version ${w2.version}: ${e.message}`)
    })))
  const version = async (p) => Number(await p.textContent('#version'))
  await alice.click('#read-snapshot')
  await alice.waitForFunction(() => document.getElementById('snapshot').textContent.includes('grpc-web'), null, { timeout: STEP })
  await Promise.all([alice, bob].map((p) => p.evaluate(() => window.scrollTo(0, 0))))
  // The screenshot: both pages side by side, composed in a third page (no image library).
  const [ia, ib] = await Promise.all([alice, bob].map((p) => p.screenshot({ type: 'png' })))
  const frame = await (await browser.newContext({ viewport: { width: 1816, height: 664 } })).newPage()
  const img = (buf) => `<img style="width:900px;border:1px solid #999" src="data:image/png;base64,${buf.toString('base64')}">`
  await frame.setContent(`<body style="margin:0;padding:8px;display:flex;gap:8px;background:#ccd">${img(ia)}${img(ib)}</body>`)
  await frame.waitForFunction(() => [...document.images].every((i) => i.complete))
  await frame.screenshot({ path: shot })
  process.stdout.write(JSON.stringify({ text: ta, version: await version(alice), rpc_version: w2.version }) + '\n')
} finally {
  await browser.close()
}
