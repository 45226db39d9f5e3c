"""Authentication and authorization shared by masters, chunkservers, clients and the gateway:
identity (`tokens`, `scopes`, `checker`, `principals`, `watcher`) and transport security (the
cluster secret and its derived keys in `secret`, daemon request signatures in `daemon`, chunk
capabilities in `capability`, TLS files and the local CA in `tls`)."""
