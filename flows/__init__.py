"""The edge: Bytewax wiring, the command line and the agents' console (the only code that imports Bytewax).

- ``dataflow``: ``build_flow``, the same wiring for the live engine, the demo and replay;
- ``bytewax_io``: Bytewax adapters over the framework-free sources, outputs and stores;
- ``runtime``: settings -> the reader, outputs and store that run; ``shutdown``: SIGTERM and Ctrl-C;
- ``health``: ``/metrics``, ``/healthz``, ``/readyz``; ``cli``: ``crm-stream`` and its commands;
- ``console``: the agents' web console.
"""
