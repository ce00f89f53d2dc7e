"""Slow clients, for tests and bench/slow_clients.py: connections that send a request head one
byte at a time, or a body at one byte a second, kept open (re-opened when the server closes
them) from a background asyncio loop, while probes time ordinary requests.
"""
import asyncio
import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass
class SlowStats:
    opened: int = 0
    closed_by_server: int = 0
    answers: list = field(default_factory=list)  # status lines the server sent before closing
    replies: list = field(default_factory=list)  # and the whole of what it sent


class SlowClients:
    """`heads` connections dribbling a request head (one byte every `interval` seconds) and
    `bodies` connections sending an upload body at one byte every `interval` seconds."""

    def __init__(self, host: str, port: int, *, heads: int, bodies: int = 0, interval: float = 2.0,
                 token: str = "", reopen: bool = True):
        self.host, self.port, self.heads, self.bodies = host, port, heads, bodies
        self.interval, self.token, self.reopen = interval, token, reopen
        self.stats = SlowStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks = []
        self._ready = threading.Event()
        self._stopping = False

    def _head(self) -> bytes:
        # Never complete: a padding header as long as any test runs.
        return b"GET /_matrix/client/v1/media/config HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000

    def _body_prefix(self) -> tuple[bytes, bytes]:
        head = (b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + self.token.encode() + b"\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n")
        return head, b"x" * 1_000_000

    async def _one(self, kind: str, opened: asyncio.Event):
        while not self._stopping:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.stats.opened += 1
            opened.set()
            if kind == "head":
                prefix, drip = b"", self._head()
            else:
                prefix, drip = self._body_prefix()
            try:
                if prefix:
                    writer.write(prefix)
                    await writer.drain()
                for i in range(len(drip)):
                    if self._stopping:
                        break
                    writer.write(drip[i:i + 1])
                    await writer.drain()
                    try:
                        answer = await asyncio.wait_for(reader.read(4096), timeout=self.interval)
                    except asyncio.TimeoutError:
                        continue
                    if answer:
                        self.stats.answers.append(answer.split(b"\r\n", 1)[0].decode(errors="replace"))
                        self.stats.replies.append(answer)
                    break  # the server answered or closed
            except (ConnectionError, OSError):
                pass
            writer.close()
            if self._stopping:
                return
            self.stats.closed_by_server += 1
            if not self.reopen:
                return

    async def _start(self):
        events = []
        for kind, count in (("head", self.heads), ("body", self.bodies)):
            for _ in range(count):
                opened = asyncio.Event()
                events.append(opened)
                self._tasks.append(asyncio.ensure_future(self._one(kind, opened)))
        await asyncio.gather(*(e.wait() for e in events))

    def start(self, timeout: float = 30) -> "SlowClients":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout)
        return self

    def stop(self) -> None:
        async def cancel():
            # The flag ends a task whose cancellation asyncio.wait_for swallowed (Python 3.11
            # can lose a cancel that arrives as the awaited read completes).
            self._stopping = True
            while pending := [task for task in self._tasks if not task.done()]:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1)

        asyncio.run_coroutine_threadsafe(cancel(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def probe(host: str, port: int, path: str, token: str, *, timeout: float = 30) -> tuple[int, float, int]:
    """(status, seconds, body bytes) of one GET on a new connection."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = response.read()
        return response.status, time.perf_counter() - start, len(body)
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
