"""The bench behind ``ops/bench``: a closed-loop load generator for a bbd node and the two-node cluster
measurements (replication lag, throughput with a live secondary, failover).

Modules by concern, each importing only those listed before it:

- ``http1``: the HTTP/1.1 client side (response parser, request bytes, asyncio and blocking connections)
- ``status``: a node's ``/status`` and what the bench reads from it
- ``workloads``: the verified operations (create, snapshot, update, modify, incr, mixed)
- ``runner``: worker processes running one workload, prefill, latency percentiles
- ``proctree``: process trees and their CPU time from /proc
- ``daemon``: starting and stopping a bbd the bench owns
- ``loadgen``: the compiled load generator as an alternative driver
- ``report``, ``cluster_report``: tables, summaries and targets
- ``probes``, ``throughput``, ``failover``: the cluster parts; ``cluster``: one cluster round
- ``cli``: argument parsing and ``main`` (``ops/bench``)

Stdlib only (uvloop when importable). It is not part of the installed package: the load generator
stays out of the wheel, and its client shares no code with the daemon it measures.
"""
