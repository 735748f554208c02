"""The steps a batch goes through, framework-free (``flows/dataflow.py`` wires them into Bytewax).

- ``pipeline``: the items between steps and ``Stages``, the one wiring of identity and profile shards that the
  dataflow, ``crm-stream evaluate`` and the benchmarks share;
- ``identity``: anonymous visitors become customers, with their buffered history;
- ``shard``: one profile shard's batch loop: apply events, run rules, fire timers, emit effects;
- ``working_set``: the customers a shard holds between batches, in front of the store of record;
- ``serving``: what the rules ask of the models (the churn risk served, reachability, training points);
- ``learning``: the process's online models, shared by its shards, and their snapshots;
- ``failures``: a record a stage cannot handle becomes a dead letter, never a stopped engine;
- ``evaluate``: the pipeline run on a file, scoring the models (``crm-stream evaluate``);
- ``gc_pacing``: the one garbage-collection policy of the engine, replay and evaluation.
"""
