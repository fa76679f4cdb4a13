"""HTTP benchmark: N messages through loa's HttpAdapter versus a naive one-request-at-a-time loop.

Both sides send the same N JSON requests to one HTTP server in a child process on 127.0.0.1:
by default a minimal aiohttp handler written for this benchmark (it parses the JSON and
answers like an SMS gateway), or, with `--server sim`, `loa sim http` and its /sms endpoint.
loa's side is the generic gateway adapter as a worker drives it: chunks handed to
`HttpAdapter.send`, a few chunks in flight, the adapter's pooled keep-alive session bounding
the requests in flight. The peer is what an application without loa writes: one
`aiohttp.ClientSession`, and in a for loop `async with session.post(...)` awaited in turn.
Wall time, the CPU of client and server, and how busy the machine was are reported per side:
the two cores are shared, so CPU per message says more than a rate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import uvloop

from common import (
    CpuTimes,
    add_output_arguments,
    bound_by,
    emit,
    machine,
    process_cpu,
    source_version,
    write_results,
)
from loa.adapters.http import HttpAdapter
from loa.message import Accepted, Message

ROUTE = "bench-http"
# a GSM-7 advisory of 60 characters, as in the engine and SMPP benchmarks
BODY = "Bo Y te: tiem vac-xin day du de bao ve ban va gia dinh minh."
SIM_READY = re.compile(r"http simulator on (http://\S+)")


def audience(count: int) -> list[Message]:
    """`count` single-part messages to distinct Vietnamese mobile numbers."""
    return [
        Message(f"c1-{n}", "+849" + str(n * 7_919 % 100_000_000).zfill(8), BODY)
        for n in range(count)
    ]


# ---------------------------------------------------------------------------------------------
# the server, in its own process


async def _serve(latency: float) -> None:
    """The minimal gateway: print the port, then answer `count` and `reset` lines on stdin."""
    from aiohttp import web

    served = itertools.count(1)
    received = 0

    async def sms(request: web.Request) -> web.Response:
        nonlocal received
        doc = orjson.loads(await request.read())  # a gateway reads what it is sent
        if latency:
            await asyncio.sleep(latency)
        received += 1
        if not doc.get("to") or "text" not in doc:
            return web.json_response({"status": "error"}, status=400)
        answer = {"status": "ok", "data": {"code": 0, "message_id": f"gw-{next(served)}"}}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/sms", sms)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"reset":
            received = 0
        print(received, flush=True)
    await runner.cleanup()


class ServerProcess:
    """The HTTP server in a child process, so its CPU is not in our event loop."""

    def __init__(self, kind: str, latency: float = 0.0) -> None:
        self.kind = kind
        self._base = 0
        if kind == "minimal":
            command = [sys.executable, __file__, "--serve", "--serve-latency", str(latency)]
        else:  # the simulator as an operator starts it; port 0 picks a free one
            loa = str(Path(sys.executable).with_name("loa"))
            command = [loa, "sim", "http", "--port", "0", "--latency", str(latency)]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "LOA_LOG_LEVEL": "warning"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if kind == "minimal":
            self.url = f"http://127.0.0.1:{int(line)}"
        else:
            found = SIM_READY.search(line)
            if found is None:
                self.stop()
                raise RuntimeError(f"loa sim http did not start: {line!r}")
            self.url = found[1]
        self.ps = psutil.Process(self.proc.pid)

    def received(self) -> int:
        """Requests the server has received since the last `reset`."""
        if self.kind == "sim":
            stats = asyncio.run(_get_json(f"{self.url}/_sim/stats"))
            return int(stats["sms"]["received"]) - self._base
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def reset(self) -> None:
        """Start counting from zero (the simulator has no reset: remember where it was)."""
        if self.kind == "sim":
            self._base += self.received()
            return
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("reset\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()

    def cpu(self) -> float:
        """CPU seconds the server has used."""
        return process_cpu(self.ps)

    def stop(self) -> None:
        """Close its stdin (the minimal server exits) or SIGTERM it (the simulator); else kill."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.kind == "sim":
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


# ---------------------------------------------------------------------------------------------
# the two clients


async def _loa(args: argparse.Namespace, url: str, messages: list[Message]) -> int:
    """Chunks through HttpAdapter.send, `chunks_in_flight` at once, as a worker's senders do."""
    adapter = HttpAdapter.create(
        ROUTE,
        {
            "url": f"{url}/sms",
            "params": {"to": "{to}", "text": "{body}", "id": "{id}"},
            "success_field": "status",
            "success_values": ["ok"],
            "id_field": "data.message_id",
            "concurrency": args.concurrency,
            "connections": args.connections,
        },
    )
    chunks = [messages[i : i + args.chunk] for i in range(0, len(messages), args.chunk)]
    gate = asyncio.Semaphore(args.chunks_in_flight)
    accepted = 0

    async def one(chunk: list[Message]) -> None:
        nonlocal accepted
        async with gate:
            results = await adapter.send(chunk)
        accepted += sum(type(r) is Accepted for r in results)

    try:
        async with asyncio.TaskGroup() as group:
            for chunk in chunks:
                group.create_task(one(chunk))
    finally:
        await adapter.aclose()
    return accepted


async def _peer(args: argparse.Namespace, url: str, messages: list[Message]) -> int:
    """The naive loop: one session, one request per message, each awaited before the next."""
    accepted = 0
    async with aiohttp.ClientSession() as session:
        for message in messages:
            doc = {"to": message.to, "text": message.body, "id": message.id}
            async with session.post(f"{url}/sms", json=doc) as response:
                answer = await response.json()
                if response.status == 200 and answer.get("status") == "ok":
                    accepted += 1
    return accepted


def end_to_end(
    name: str, args: argparse.Namespace, server: ServerProcess, messages: list[Message]
) -> dict[str, Any]:
    """One side's run: rate, and how busy the client, the server and the machine were."""
    server.reset()
    side = _loa if name == "loa" else _peer
    start = CpuTimes.now(server.cpu)
    started = time.perf_counter()
    accepted = uvloop.run(side(args, server.url, messages))
    elapsed = time.perf_counter() - started
    used = CpuTimes.now(server.cpu) - start
    received = server.received()
    count = len(messages)
    if accepted != count or received != count:
        raise RuntimeError(f"{name}: {accepted} accepted, {received} received of {count}")
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed, 1),
        "accepted": accepted,
        "server_received": received,
        "client_cpu_us_per_message": round(used.client / count * 1e6, 1),
        "server_cpu_us_per_message": round(used.server / count * 1e6, 1),
        "client_cpu_share": round(used.client / elapsed, 2),
        "server_cpu_share": round(used.server / elapsed, 2),
        "wall_us_per_message": round(elapsed / count * 1e6, 1),
        **used.machine_shares(elapsed),
    }


def latency_run(args: argparse.Namespace) -> dict[str, Any]:
    """Both sides again against a server that waits `provider_latency` per request, as a real
    provider's round trip does: the serial loop then waits it out once per message."""
    messages = audience(args.latency_messages)
    server = ServerProcess(args.server, args.provider_latency)
    try:
        loa = end_to_end("loa", args, server, messages)
        peer = end_to_end("peer", args, server, messages[: max(1, len(messages) // 4)])
    finally:
        server.stop()
    return {
        "latency_s": args.provider_latency,
        "loa_msgs_per_s": loa["msgs_per_s"],
        "peer_msgs_per_s": peer["msgs_per_s"],
        "ratio": round(loa["msgs_per_s"] / peer["msgs_per_s"], 1),
        "loa": loa,
        "peer": peer,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both sides against one server process, loa first."""
    host = machine()
    loa_messages = audience(args.messages)
    peer_messages = loa_messages[: args.peer_messages]
    server = ServerProcess(args.server)
    try:
        loa = end_to_end("loa", args, server, loa_messages)
        peer = end_to_end("peer", args, server, peer_messages)
    finally:
        server.stop()
    ratio = round(loa["msgs_per_s"] / peer["msgs_per_s"], 1)
    slow = None
    if args.provider_latency > 0:
        slow = latency_run(args)
    client_ratio = round(peer["client_cpu_us_per_message"] / loa["client_cpu_us_per_message"], 2)
    return {
        "messages": args.messages,
        "peer_messages": len(peer_messages),
        "loa_msgs_per_s": loa["msgs_per_s"],
        "peer_msgs_per_s": peer["msgs_per_s"],
        "ratio": ratio,
        "client_cpu_us_per_message": {
            "loa": loa["client_cpu_us_per_message"],
            "peer": peer["client_cpu_us_per_message"],
        },
        "server_cpu_us_per_message": {
            "loa": loa["server_cpu_us_per_message"],
            "peer": peer["server_cpu_us_per_message"],
        },
        # above 1: loa's client spends less CPU per message than the naive loop
        "client_cpu_ratio": client_ratio,
        "loa_bound_by": bound_by(loa),
        "peer_bound_by": bound_by(peer),
        "note": (
            "the peer waits one loopback round trip per message with both processes mostly "
            "idle; loa keeps up to `concurrency` requests in flight on pooled keep-alive "
            "connections, so its rate is bound by the CPU of one side or the other (see "
            "loa_bound_by): the server is one single-threaded process, as is the client"
        ),
        "with_provider_latency": slow,
        "loa": loa,
        "peer": peer,
        "config": {
            "server": (
                "minimal aiohttp handler (uvloop, orjson) in a child process on 127.0.0.1"
                if args.server == "minimal"
                else "`loa sim http` (its /sms endpoint) in a child process on 127.0.0.1"
            ),
            "request": "POST /sms, JSON {to, text, id}; answer JSON {status, data.message_id}",
            "loa": (
                f"HttpAdapter, chunks of {args.chunk}, {args.chunks_in_flight} chunks in flight, "
                f"{args.concurrency} requests in flight, pool of {args.connections} connections"
            ),
            "peer": "one aiohttp.ClientSession; `async with session.post(...)` awaited in a loop",
            "loop": "uvloop (both clients)",
            "chunk": args.chunk,
            "chunks_in_flight": args.chunks_in_flight,
            "concurrency": args.concurrency,
            "connections": args.connections,
        },
        "machine": host,
        "loa_source": source_version(),
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages loa sends")
    parser.add_argument(
        "--peer-messages", type=int, default=None, help="messages the peer sends (default N)"
    )
    parser.add_argument("--server", choices=["minimal", "sim"], default="minimal")
    parser.add_argument("--chunk", type=int, default=50, help="messages per adapter.send")
    parser.add_argument("--chunks-in-flight", type=int, default=4, help="sends at once (loa)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (loa)")
    parser.add_argument("--connections", type=int, default=100, help="loa's pool size")
    add_output_arguments(parser)
    parser.add_argument(
        "--provider-latency", type=float, default=0.02,
        help="seconds the server waits per request in the second run (0: no second run)",
    )  # fmt: skip
    parser.add_argument(
        "--latency-messages", type=int, default=2_000,
        help="messages loa sends in the second run (the peer: a quarter)",
    )  # fmt: skip
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-latency", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer_messages is None:
        args.peer_messages = args.messages
    counts = (args.messages, args.peer_messages, args.chunk, args.chunks_in_flight)
    if min(*counts, args.concurrency, args.connections) < 1:
        parser.error("counts must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the result, and keep it in benchmarks/results/."""
    args = parse_args(argv)
    if args.serve:
        uvloop.run(_serve(args.serve_latency))
        return 0
    result = run(args)
    emit(result, args.json, write_results("http", result, args.output_dir))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LOA_LOG_LEVEL", "warning")
    sys.exit(main())
