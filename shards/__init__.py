"""Shard workers: processes that own a slice of the stores (engine) and answer the supervisor over ZeroMQ."""
