"""SMTP benchmark: N e-mails through loa's SmtpAdapter versus an EmailMessage per recipient.

Both sides send the same N messages (one template, a To per recipient) over the same number of
persistent connections to one aiosmtpd server running in its own process on 127.0.0.1, whose
handler only counts. The naive peer builds an `email.message.EmailMessage` per recipient and
sends it with aiosmtplib's `send_message`; loa renders the MIME content once and writes only
Date, To and Message-ID per recipient. The rendering cost of each side is also measured alone,
without the network: that is where the two differ. End to end, both sides pay the same SMTP
round trips (MAIL, RCPT, DATA per message) and the server's own CPU, which may bound the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import email.utils
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import psutil
import uvloop
from aiosmtplib.email import flatten_message

from common import (
    CPU_BOUND_SHARE,
    CpuTimes,
    add_output_arguments,
    bound_by,
    emit,
    machine,
    process_cpu,
    source_version,
    write_results,
)
from loa.adapters.smtp import SmtpAdapter
from loa.message import Accepted, Message

SENDER = "Bộ Y tế <thongbao@moh.gov.vn>"
SENDER_NAME, SENDER_ADDRESS = "Bộ Y tế", "thongbao@moh.gov.vn"
SUBJECT = "Thông báo lịch tiêm vắc-xin phòng COVID-19"
BODY = (
    "Bộ Y tế khuyến cáo: đeo khẩu trang, rửa tay thường xuyên, giữ khoảng cách, không tụ tập "
    "và khai báo y tế.\nLịch tiêm mũi 2 của bạn đã được xếp tại trạm y tế phường; vui lòng mang "
    "theo căn cước công dân và sổ tiêm chủng.\nĐường dây nóng: xem trang chính thức của Bộ Y tế."
    "\n\nTrân trọng,\nBộ Y tế\n"
)


def audience(count: int, personal: bool = False) -> Iterator[Message]:
    """`count` e-mails of one campaign; `personal` puts each person's name in the body."""
    extra = {"channel": "email", "subject": SUBJECT}
    for n in range(count):
        body = f"Chào bạn số {n},\n{BODY}" if personal else BODY
        yield Message(f"c1-{n:06d}", f"nguoi.{n}@example.vn", body, extra=extra)


def naive_email(message: Message) -> EmailMessage:
    """What an application without loa does: one EmailMessage per recipient."""
    built = EmailMessage()
    built["From"] = SENDER
    built["To"] = message.to
    built["Subject"] = SUBJECT
    built["Date"] = email.utils.formatdate()
    built["Message-ID"] = email.utils.make_msgid(idstring=message.id, domain="moh.gov.vn")
    built.set_content(message.body)
    return built


# ---------------------------------------------------------------------------------------------
# the server, in its own process


class Counter:
    """The minimal aiosmtpd handler: counts messages and bytes, keeps nothing."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        self.bytes += len(envelope.content)
        return "250 OK"


async def _serve() -> None:
    """Print the port, then answer `count` and `reset` on stdin until it closes."""
    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    counter = Counter()
    server = await loop.create_server(
        lambda: SMTP(counter, hostname="bench.local", loop=loop), "127.0.0.1", 0
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"reset":
            counter.messages = counter.bytes = 0
        print(counter.messages, counter.bytes, flush=True)
    server.close()


class ServerProcess:
    """The aiosmtpd server in a child process, so its CPU is not in our event loop."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.ps = psutil.Process(self.proc.pid)

    def ask(self, command: str) -> tuple[int, int]:
        """Send `count` or `reset`; the server's message and byte counts."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        messages, size = self.proc.stdout.readline().split()
        return int(messages), int(size)

    def cpu(self) -> float:
        """CPU seconds the server has used."""
        return process_cpu(self.ps)

    def stop(self) -> None:
        """Close its stdin (it exits), or kill it."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ---------------------------------------------------------------------------------------------
# rendering alone


def render_cost(count: int) -> dict[str, float]:
    """CPU microseconds per message to produce the wire bytes, without the network."""
    adapter = SmtpAdapter.create("bench", {"host": "127.0.0.1", "sender": SENDER})
    same, personal = list(audience(count)), list(audience(count, personal=True))

    def timed(render: Any, messages: Sequence[Message]) -> float:
        # CPU time, not wall time: on a shared machine other processes do not count against us
        started = time.process_time()
        for message in messages:
            render(message)
        return round((time.process_time() - started) / len(messages) * 1e6, 2)

    loa = timed(adapter.render, same)
    loa_personal = timed(adapter.render, personal)
    peer_count = max(1, min(count, 2_000))  # about 1 ms each: a sample is enough
    peer = timed(lambda m: flatten_message(naive_email(m), cte_type="8bit"), same[:peer_count])
    return {
        "loa_render_us": loa,
        "loa_render_us_personal_body": loa_personal,
        "peer_render_us": peer,
        "render_ratio": round(peer / loa, 1),
        "render_ratio_personal_body": round(peer / loa_personal, 1),
        "render_messages": count,
        "peer_render_messages": peer_count,
    }


# ---------------------------------------------------------------------------------------------
# end to end


async def _loa(args: argparse.Namespace, port: int, messages: list[Message]) -> int:
    options = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "sender": SENDER,
        "connections": args.connections,
        "helo_name": "loa.bench",
    }
    adapter = SmtpAdapter.create("bench", options)
    chunks = [messages[i : i + args.chunk] for i in range(0, len(messages), args.chunk)]
    accepted = 0
    gate = asyncio.Semaphore(args.concurrency)  # like a worker: `concurrency` chunks in flight

    async def one(chunk: list[Message]) -> None:
        nonlocal accepted
        async with gate:
            results = await adapter.send(chunk)
        accepted += sum(isinstance(r, Accepted) for r in results)

    try:
        async with asyncio.TaskGroup() as group:
            for chunk in chunks:
                group.create_task(one(chunk))
    finally:
        await adapter.aclose()
    return accepted


async def _peer(args: argparse.Namespace, port: int, messages: list[Message]) -> int:
    clients = [
        aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, local_hostname="peer.bench"
        )
        for _ in range(args.connections)
    ]
    todo = iter(messages)
    accepted = 0

    async def drain(client: aiosmtplib.SMTP) -> None:
        nonlocal accepted
        for message in todo:  # shared: each connection takes the next message when free
            await client.send_message(naive_email(message))
            accepted += 1

    await asyncio.gather(*(client.connect() for client in clients))
    try:
        await asyncio.gather(*(drain(client) for client in clients))
    finally:
        await asyncio.gather(*(client.quit() for client in clients))
    return accepted


def end_to_end(
    name: str, args: argparse.Namespace, server: ServerProcess, messages: list[Message]
) -> dict[str, Any]:
    """One side's run: rate, and how busy the client and the server were."""
    server.ask("reset")
    side = _loa if name == "loa" else _peer
    start = CpuTimes.now(server.cpu)
    started = time.perf_counter()
    accepted = uvloop.run(side(args, server.port, messages))
    elapsed = time.perf_counter() - started
    used = CpuTimes.now(server.cpu) - start
    received, size = server.ask("count")
    if accepted != len(messages) or received != len(messages):
        raise RuntimeError(f"{name}: {accepted} accepted, {received} received of {len(messages)}")
    return {
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(len(messages) / elapsed, 1),
        "accepted": accepted,
        "server_received": received,
        "bytes_per_message": round(size / received),
        "client_cpu_share": round(used.client / elapsed, 2),
        "server_cpu_share": round(used.server / elapsed, 2),
        "client_cpu_us_per_message": round(used.client / len(messages) * 1e6, 1),
        "wall_ms_per_message_and_connection": round(
            elapsed / len(messages) * args.connections * 1e3, 2
        ),
        "server_cpu_us_per_message": round(used.server / len(messages) * 1e6, 1),
        **used.machine_shares(elapsed),
    }


def note(loa: dict[str, Any], peer: dict[str, Any]) -> str:
    """A sentence on what the end-to-end ratio measures."""
    shares = (
        f"client {loa['client_cpu_share']:.0%}, server {loa['server_cpu_share']:.0%} of a core, "
        f"machine {loa['machine_cpu_busy_share']:.0%} busy of which other processes "
        f"{loa['other_processes_cpu_share']:.0%}"
    )
    limit = bound_by(loa)
    if limit == "server":
        head = "the end-to-end ratio is bound by the server (aiosmtpd, one core)"
    elif limit == "client":
        head = "loa's end-to-end rate is bound by its own CPU, mostly aiosmtplib's per-command work"
    elif limit == "round trips":
        head = "loa's end-to-end rate is bound by SMTP round trips (4 per message and connection)"
    else:
        head = "loa's end-to-end rate is bound by the machine's CPU, shared with other processes"
    return (
        f"{head} ({shares}); the peer is bound by {bound_by(peer)}. End to end both sides pay "
        "the same SMTP commands and server work, so render_ratio and client_cpu_ratio show "
        "the difference that belongs to the client"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Rendering alone, then both sides end to end against one server process."""
    render = render_cost(min(args.messages, args.render_messages))
    messages = list(audience(args.messages))
    server = ServerProcess()
    try:
        loa = end_to_end("loa", args, server, messages)
        peer = end_to_end("peer", args, server, messages)
    finally:
        server.stop()
    ratio = round(loa["msgs_per_s"] / peer["msgs_per_s"], 1)
    return {
        "messages": args.messages,
        "loa_msgs_per_s": loa["msgs_per_s"],
        "peer_msgs_per_s": peer["msgs_per_s"],
        "ratio": ratio,
        **render,
        "client_cpu_us_per_message": {
            "loa": loa["client_cpu_us_per_message"],
            "peer": peer["client_cpu_us_per_message"],
        },
        "client_cpu_ratio": round(
            peer["client_cpu_us_per_message"] / loa["client_cpu_us_per_message"], 1
        ),
        "server_bound": loa["server_cpu_share"] >= CPU_BOUND_SHARE,
        "loa_bound_by": bound_by(loa),
        "peer_bound_by": bound_by(peer),
        "note": note(loa, peer),
        "loa": loa,
        "peer": peer,
        "config": {
            "connections": args.connections,
            "chunk": args.chunk,
            "chunks_in_flight": args.concurrency,
            "server": "aiosmtpd in a child process on 127.0.0.1, counting handler",
            "loop": "uvloop",
            "peer": "EmailMessage per recipient + aiosmtplib SMTP.send_message, "
            "same number of persistent connections",
            "body_bytes": len(BODY.encode()),
        },
        "machine": machine(),
        "loa_source": source_version(),
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=20_000, help="e-mails per side")
    parser.add_argument("--connections", type=int, default=4, help="SMTP sessions per side")
    parser.add_argument("--chunk", type=int, default=50, help="messages per adapter send")
    parser.add_argument("--concurrency", type=int, default=4, help="sends in flight (loa)")
    parser.add_argument("--render-messages", type=int, default=20_000, help="render-only count")
    add_output_arguments(parser)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.connections < 1 or args.chunk < 1 or args.concurrency < 1:
        parser.error("counts must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the result, and keep it in benchmarks/results/."""
    args = parse_args(argv)
    if args.serve:
        uvloop.run(_serve())
        return 0
    result = run(args)
    path = write_results("smtp", result, args.output_dir, ensure_ascii=False)
    emit(result, args.json, path, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LOA_LOG_LEVEL", "warning")
    sys.exit(main())
