"""Load generation and benchmarks for crm-stream (not imported by the engine).

- ``load.generator``: a fast synthetic source of contract events (templates + orjson-free formatting).
- ``load.bench_spine``: the spine benchmark (``python -m load.bench_spine --help``).
- ``load.servers``: redis-server and Tansu on loopback for the benchmarks.
"""
