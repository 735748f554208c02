"""Load generation, benchmarks and evaluations for crm-stream (never imported by the engine).

- ``load.generator``: a fast synthetic source of contract events (pre-built templates, 0.3-0.5 M events/s).
- ``load.bench_spine``: the spine benchmark, Kafka -> engine -> Redis (``python -m load.bench_spine --help``).
- ``load.servers``: redis-server and Tansu on loopback for benchmarks; ``load.proc``: CPU and memory from /proc.
- Results land in ``load/results/`` as JSON, one file per benchmark and day.
"""
