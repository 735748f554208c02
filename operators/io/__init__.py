"""Everything that reads or writes outside the process, and the vocabulary of what is written.

- ``interface``: the effect vocabulary and the small interfaces every source, output and store implements;
- ``effects``: applying a batch of effects in the one order that keeps restarts honest;
- ``stores``: Redis (single node and Cluster) and an in-process store;
- ``kafka``: Kafka readers and outputs over confluent-kafka;
- ``files``: JSON-lines files as a source, and file / memory / terminal outputs;
- ``keys``: the Redis key layout; ``jsonutil``: the one JSON wrapper; ``metrics``: Prometheus metrics.
"""
