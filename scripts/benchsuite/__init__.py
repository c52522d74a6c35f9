"""The parts of ``scripts/bench``: one module per sub-benchmark (``overhead``, ``throughput``,
``routing``, ``footprint``), and what they share: the bare echo server, the load generator
and core pinning, LiteLLM's proxy, the processes of a run (``fleet``), results and plots."""
