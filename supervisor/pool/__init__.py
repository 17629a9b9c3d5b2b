"""The shard workers: spawning, watching and restarting them (``shardpool``), one ZeroMQ channel per
shard (``channel``), and their memory and CPU reports (``procinfo``)."""
