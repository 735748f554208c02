"""Load generation, benchmarks and evaluations for crm-stream (never imported by the engine).

- ``load.generator``: a fast synthetic source of contract events (pre-built templates, 0.3-0.5 M events/s).
- ``load.generate``: contract events to Kafka and/or a file at a target rate, mixes and bursts (``python -m load.generate --help``).
- ``load.bench_spine``: the spine benchmark, Kafka -> engine -> Redis (``python -m load.bench_spine --help``).
- ``load.bench_e2e``: events in -> alerts out on Kafka + Redis, 1..N engine processes, latency to the alert, memory, baselines.
- ``load.servers``: redis-server and Tansu on loopback for benchmarks; ``load.proc``: CPU and memory from /proc.
- Results land in ``load/results/`` as JSON, one file per benchmark and day.
"""
