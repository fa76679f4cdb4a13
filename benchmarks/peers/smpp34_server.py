"""smpp34's SMPP server (Rust core, Python bridge) in a process of its own, for the benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

import smpp34


async def serve(port: int) -> None:
    """Accept every bind and every submit_sm (decimal ids) until stdin closes."""
    server = smpp34.Server("127.0.0.1", port, system_id="SMPP34")
    await server.start()
    print(json.dumps({"event": "listening", "port": port}), flush=True)
    main = asyncio.current_task()
    assert main is not None
    # the parent closing our stdin (or dying) ends the server; no task per event for it
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stdin_closed.add_done_callback(lambda _: main.cancel())
    count = 0
    try:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                event = await server.next()
                if isinstance(event, smpp34.SubmitSmEvent):
                    count += 1
                    event.accept(str(count))
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
