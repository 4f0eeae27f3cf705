"""`swarmlet chaos`: failover testing as a feature. Faults are injected into a running
cluster on a seeded schedule while clients write and read through the public API; the
history is checked for lost writes, stale reads and duplicate tasks, and the figures
(failover, write unavailability, time to full replicas) are reported.

Pure parts: schedule.py (the seeded plan), history.py (the record, the checker and the
figures), report.py (JSON, terminal table, HTML). I/O at the edges: faults.py and
compose.py (what breaks and heals a cluster, per cluster kind), workload.py (the clients
and monitors), runner.py (the run); two small processes of their own: probe.py (the
HTTP prober, run where the cluster's clients are) and delay.py (the delaying proxy of a
latency fault, run inside a node's namespace).
"""
