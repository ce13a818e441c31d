"""A small asyncio HTTP/1.1 client for the cases where exact request counts matter more than
throughput: "1,000 admissions all in flight at once" and "admit each of these 10,000 reviews
exactly once". (wrk and vegeta run for a duration, not for a count.)

:func:`burst` opens one TLS connection per request first, then writes every request, then
reads every answer: all requests are in flight at the webhook together, which a client that
connects lazily cannot promise. :func:`each_once` sends each body exactly once over
``concurrency`` keep-alive connections.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, kw_only=True)
class Answer:
    status: int
    body: bytes
    seconds: float
    """From writing the request to reading the whole answer."""


def ssl_context(cafile: str | None) -> ssl.SSLContext:
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _request(host: str, path: str, body: bytes, *, close: bool) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, b"".join(parts)
    if length is None:
        return status, await reader.read()
    return status, await reader.readexactly(length)


async def burst(
    url: str,
    bodies: Sequence[bytes],
    *,
    cafile: str | None = None,
    connect_concurrency: int = 64,
) -> list[Answer]:
    """Connect ``len(bodies)`` TLS connections, then send every request at once; the answers
    in order. Connecting is throttled (``connect_concurrency``) so the server's listen backlog
    never overflows; sending is not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    path = parts.path or "/"
    ctx = ssl_context(cafile)
    gate = asyncio.Semaphore(connect_concurrency)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=host, limit=1 << 20
            )

    streams = await asyncio.gather(*(connect() for _ in bodies))
    go = asyncio.Event()

    async def one(i: int) -> Answer:
        reader, writer = streams[i]
        data = _request(parts.netloc, path, bodies[i], close=True)
        await go.wait()
        started = time.perf_counter()
        writer.write(data)
        await writer.drain()
        status, body = await _read_answer(reader)
        seconds = time.perf_counter() - started
        writer.close()
        return Answer(status=status, body=body, seconds=seconds)

    tasks = [asyncio.create_task(one(i)) for i in range(len(bodies))]
    await asyncio.sleep(0)  # every task is waiting at the gate
    go.set()
    answers = await asyncio.gather(*tasks)
    for _, writer in streams:
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
    return answers


async def each_once(
    url: str,
    bodies: Sequence[bytes],
    *,
    cafile: str | None = None,
    concurrency: int = 32,
) -> list[Answer]:
    """Send every body exactly once over ``concurrency`` keep-alive connections; the answers
    in the order of ``bodies``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    path = parts.path or "/"
    ctx = ssl_context(cafile)
    answers: list[Answer | None] = [None] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=host, limit=1 << 20
        )
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                writer.write(_request(parts.netloc, path, bodies[i], close=False))
                await writer.drain()
                status, body = await _read_answer(reader)
                answers[i] = Answer(status=status, body=body, seconds=time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
    return [a for a in answers if a is not None]
