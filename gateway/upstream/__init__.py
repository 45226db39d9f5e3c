"""The gateway's side toward upstream servers: HTTP/1.1 and HTTP/2 client connections (our
own, over the same sans-IO parsers: general-purpose Python clients cannot carry gRPC trailers),
pools of them per upstream, and the choice of upstream per request."""
