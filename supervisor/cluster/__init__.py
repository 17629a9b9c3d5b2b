"""The pair: the peer link and its messages, heartbeats and elections (``coordinator``), replication,
join, forwarding and the write gate."""
