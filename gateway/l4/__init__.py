"""The L4 (TCP and UDP) balancer in front of gateway replicas: `gfs lb` (docs/gateway.md)."""
