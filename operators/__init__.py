"""The engine's logic, free of any stream framework: pure functions and small stateful classes.

Packages by concept (``flows/`` wires them into Bytewax; nothing here imports it):

- ``events``: the contract's event schema and decoder, event time, routing a batch to shards, the simulated shop;
- ``profile``: a customer's live state, how each event changes it, RFM segments, event-time timers, views;
- ``rules``: one module per alert rule, the rule registry and context, alert construction with deterministic ids;
- ``policy``: what a marketing trigger must pass (consent, caps, quiet hours) and the book of held triggers;
- ``privacy``: redaction, pseudonyms and encryption at rest, access export, audit, erasure bookkeeping;
- ``stages``: the steps of the pipeline (identity stitching, the profile shard and its parts, model glue, GC policy);
- ``io``: the effect vocabulary, sources, outputs and stores (Redis, Kafka, files), key layout, metrics, JSON.
"""
