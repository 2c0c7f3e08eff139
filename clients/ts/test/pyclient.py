"""The Python client's side of clients/ts/test/yjs.test.mjs (run with the repository's .venv):

    python pyclient.py ADDRESS write NODE OPS_JSON       -> {"version": N}
    python pyclient.py ADDRESS wait NODE PATH VALUE_JSON -> {"version": N, "document": {...}}

``wait`` follows the document (virtualdom.client's subscribe from version 0) until the value at
PATH equals VALUE, then prints the snapshot at that version.
"""

import asyncio
import json
import sys

from virtualdom.client import Change, GatewayClient


async def main(address: str, cmd: str, node: str, *args: str) -> None:
    async with GatewayClient(address) as client:
        if cmd == "write":
            w = await client.write(node, json.loads(args[0]), actor="python")
            print(json.dumps({"version": w.version}))
            return
        path, want = args[0], json.loads(args[1])
        async with client.subscribe(node, from_version=0) as sub:
            async for event in sub:
                if not isinstance(event, Change):
                    continue
                snap = await client.read(node, version=event.version)
                if snap.document.get(path) == want:
                    print(json.dumps({"version": snap.version, "document": snap.document}))
                    return


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), 60))
