"""The supervisor: owns the Unix socket and HTTP API, role/epoch state, limits, and routes to shards."""
