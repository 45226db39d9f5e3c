"""HTTP/2 pieces shared by the server engine and the upstream client: sending a body within the
peer's flow-control windows, and turning h2 header lists into ours."""
from __future__ import annotations

import asyncio

import h2.connection
import h2.exceptions

CONNECTION_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection",
                                "transfer-encoding", "upgrade", "http2-settings"})


def decode_headers(raw) -> list[tuple[str, str]]:
    return [(k.decode("latin-1") if isinstance(k, bytes) else k,
             v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in raw]


def h2_fields(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Our header list for an HTTP/2 HEADERS frame: lower-case names, no connection headers
    (forbidden in HTTP/2), `te` only as `trailers`."""
    out = []
    for k, v in headers:
        k = k.lower()
        if k in CONNECTION_HEADERS or k == "host" or (k == "te" and v.lower() != "trailers"):
            continue
        out.append((k.encode("latin-1"), v.encode("latin-1")))
    return out


class FlowWindows:
    """Wakes the senders waiting for the peer to open a flow-control window."""

    def __init__(self):
        self._waiters: dict[int, asyncio.Event] = {}

    def opened(self, stream_id: int) -> None:
        """WINDOW_UPDATE or SETTINGS received: stream 0 means every stream may go on."""
        if stream_id == 0:
            for event in self._waiters.values():
                event.set()
        elif stream_id in self._waiters:
            self._waiters[stream_id].set()

    def wake_all(self) -> None:
        self.opened(0)

    async def send(self, conn: h2.connection.H2Connection, stream_id: int, data: bytes,
                   flush, drain, alive) -> None:
        """Send `data` on the stream as the windows allow; `flush` writes what h2 framed,
        `drain` waits for the socket, `alive()` says whether to go on waiting."""
        view = memoryview(data)
        while view:
            window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                event = self._waiters.setdefault(stream_id, asyncio.Event())
                event.clear()
                await event.wait()
                if not alive():
                    raise ConnectionResetError("stream closed while waiting for its window")
                continue
            conn.send_data(stream_id, view[:window].tobytes())
            view = view[window:]
            flush()
            await drain()
        self._waiters.pop(stream_id, None)

    def forget(self, stream_id: int) -> None:
        event = self._waiters.pop(stream_id, None)
        if event is not None:
            event.set()
