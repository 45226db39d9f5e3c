"""Per-connection limits of the HTTP server: what keeps memory bounded whatever clients send."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = 32 * 1024       # request line + headers (HTTP/1.1), header list (h2)
    max_headers: int = 100
    max_body_bytes: int = 1024 ** 3         # per request; beyond it: 413
    body_buffer_bytes: int = 256 * 1024     # buffered request body per request before reading
                                            # from the client pauses
    write_buffer_bytes: int = 256 * 1024    # transport high-water mark: writers wait beyond it
    header_timeout_s: float = 10.0          # from the first byte of a request to its last header
    idle_timeout_s: float = 60.0            # no byte in either direction for this long: close
    keepalive_timeout_s: float = 15.0       # between requests on a kept-alive connection
    h2_max_streams: int = 100               # concurrent streams per HTTP/2 connection
    h2_window: int = 256 * 1024             # HTTP/2 initial stream window we advertise
    h2_max_resets: int = 200                # streams a client may reset while they are being
    h2_reset_window_s: float = 2.0          # served, per window; beyond: GOAWAY (rapid reset)
