// Hocuspocus 3.4.4 as it ships (in memory, no extensions), for benchmarks/load/ws_rows.py:
// prints "PORT <n>" once listening on 127.0.0.1, stops on SIGTERM.
import { Server } from '@hocuspocus/server'

const server = new Server({ port: 0, address: '127.0.0.1', quiet: true })
await server.listen()
process.stdout.write(`PORT ${server.address.port}\n`)
process.on('SIGTERM', async () => { await server.destroy(); process.exit(0) })
