"""The gateway's one HTTP server: sans-IO parsers (httptools for HTTP/1.1, h2 for HTTP/2) driven by
asyncio protocols. Every request, whichever protocol carried it, reaches the application as an
`Exchange` (exchange.py), so the proxy and the built-in targets never see the wire format."""
