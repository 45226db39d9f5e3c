"""A TCP relay that delays every byte by a fixed time in both directions (this kernel has no
`netem` qdisc): what the chaos suite puts on a link to make it slow. Order and content are kept;
each piece read is written `delay_s` after it arrived."""
from __future__ import annotations

import asyncio
import threading


class DelayProxy:
    """Listens on (host, port) — port 0 picks one — and relays each connection to `target`
    ("host:port"), holding every piece `delay_s` seconds. Runs on its own thread until close()."""

    def __init__(self, host: str, target: str, delay_s: float, port: int = 0):
        self.target_host, target_port = target.rsplit(":", 1)
        self.target_port = int(target_port)
        self.delay_s = delay_s
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(host, port, started),
                                        name="delay-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        if self._server is None:
            raise RuntimeError(f"delay proxy could not listen on {host}:{port}")
        self.port = self._server.sockets[0].getsockname()[1]

    def _run(self, host: str, port: int, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, host, port))
        finally:
            started.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), 5)
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy src to dst, each piece `delay_s` after it was read (reading goes on meanwhile)."""
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    break
                dst.write(data)
                await dst.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await src.read(65536)
                await queue.put((loop.time() + self.delay_s, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.CancelledError):
            sender.cancel()
        finally:
            dst.close()

    def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            self._loop.call_later(0.1, self._loop.stop)
        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)
