"""Which route a request takes (a host map over path tries) and who may take it (CIDR tries)."""
